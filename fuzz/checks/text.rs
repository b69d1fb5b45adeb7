//! Any text through every tokenizer and featurizer of the embedded models:
//! the sentence encoder's WordPiece tokenizer with its pruned-vocabulary map,
//! the chat model's byte-level BPE (encode, then decode), lande's character
//! n-grams and the profanity model's tf-idf words. Oracles: no panic, and
//! each output within its documented bounds.

use edgeinfer::registry::{self, Task, MODELS};

/// One input; panics on a finding.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for spec in MODELS {
        match spec.task {
            Task::SentenceEmbedding => {
                let (encoder, _) = registry::encoder(spec).expect("the encoder loads");
                let tokenized = encoder.tokenize(&[&text]).expect("any text tokenizes");
                let t = &tokenized[0];
                assert!(t.ids.len() <= encoder.max_tokens() && t.ids.len() >= 2);
            }
            Task::TextGeneration => {
                let (model, _) = registry::chat_model(spec).expect("the chat model loads");
                let ids = model.encode(&text).expect("any text encodes");
                assert!(ids
                    .iter()
                    .all(|&id| (id as usize) < model.decoder().config().vocab));
                model.decode(&ids).expect("its own ids decode");
            }
            Task::LanguageIdentification => {
                let (classifier, _) = registry::classifier(spec).expect("lande loads");
                let ngrams = classifier.ngrams().expect("lande has n-grams");
                let features = ngrams.featurize(&text);
                assert_eq!(features.len(), ngrams.features());
                assert!(features.iter().all(|f| f.is_finite() && *f >= 0.0));
            }
            Task::Toxicity => {
                let (classifier, _) = registry::classifier(spec).expect("profanity loads");
                let tfidf = classifier.tfidf().expect("profanity is tf-idf");
                assert!(tfidf
                    .counts(&text)
                    .iter()
                    .all(|&(term, n)| term < tfidf.terms() && n > 0));
                let p = tfidf.probability(&text);
                assert!((0.0..=1.0).contains(&p), "{p}");
            }
            Task::SentimentAnalysis => {}
        }
    }
}
