//! Writes a GGUF file's tokenizer as a `tokenizer.json` (the worker's
//! `tokenizers` crate reads it): the file's vocabulary, merges, special
//! tokens and the pre-tokenizer its `tokenizer.ggml.pre` names, as llama.cpp
//! cuts text (`edgeinfer_pipeline::gguf_tokenizer`). What a `gguf-chat`
//! model's `[model.input] tokenizer` points at.
//!
//! `cargo run -p edgeinfer-pipeline --release --bin gguf-tokenizer -- FILE.gguf OUT.json`

use edgeinfer_pipeline::gguf_tokenizer::Vocabulary;
use edgeinfer_pipeline::pack_gguf::Gguf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [file, out] = args.as_slice() else {
        eprintln!("usage: gguf-tokenizer FILE.gguf OUT.json");
        std::process::exit(2);
    };
    let result = std::fs::read(file)
        .map_err(|e| format!("read {file}: {e}"))
        .and_then(|bytes| {
            let gguf = Gguf::parse(&bytes)?;
            let vocabulary = Vocabulary::of(&gguf)?;
            let json = vocabulary.tokenizer_json()?;
            // Refuse what the worker could not load.
            tokenizers::Tokenizer::from_bytes(json.as_bytes())
                .map_err(|e| format!("the tokenizers crate does not load it: {e}"))?;
            std::fs::write(out, &json).map_err(|e| format!("write {out}: {e}"))?;
            Ok(format!(
                "{out}: {} tokens, {} merges, pre-tokenizer {:?}, {} bytes",
                vocabulary.tokens.len(),
                vocabulary.merges.len(),
                vocabulary.pre,
                json.len()
            ))
        });
    match result {
        Ok(summary) => println!("{summary}"),
        Err(e) => {
            eprintln!("gguf-tokenizer: {e}");
            std::process::exit(1);
        }
    }
}
