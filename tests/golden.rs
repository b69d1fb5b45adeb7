//! Every embedded model against its reference implementation's outputs,
//! natively (the same comparison runs through workerd in tests/http.rs).
//!
//! lande: the featurizer must reproduce lande's features bit for bit, top-1 must
//! equal lande's on every golden sentence, and every probability must be within
//! PROB_TOLERANCE (lande sums in f64, tract in f32; measured worst 9.8e-5).

use edgeinfer::registry;
use serde::Deserialize;

const PROB_TOLERANCE: f32 = 2e-4;

#[derive(Deserialize)]
struct Golden {
    labels: Vec<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    source: String,
    text: String,
    normalized: String,
    features: Vec<(usize, f32)>,
    probabilities: Vec<f32>,
    top1: String,
}

fn golden() -> Golden {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/models/lande/golden.json");
    serde_json::from_slice(&std::fs::read(path).expect("read golden")).expect("parse golden")
}

#[test]
fn golden_set_is_large_and_varied() {
    let g = golden();
    assert!(g.cases.len() >= 200, "{} cases", g.cases.len());
    let mut tops: Vec<&str> = g.cases.iter().map(|c| c.top1.as_str()).collect();
    tops.sort();
    tops.dedup();
    assert!(tops.len() >= 45, "only {} distinct languages", tops.len());
    assert!(
        g.cases.iter().any(|c| c.source == "edge")
            && g.cases.iter().any(|c| c.source.starts_with("udhr:"))
    );
}

#[test]
fn normalization_matches_lande() {
    for case in golden().cases {
        assert_eq!(
            edgeinfer::ngrams::normalize(&case.text),
            case.normalized,
            "text {:?}",
            case.text
        );
    }
}

#[test]
fn features_match_lande_exactly() {
    let spec = registry::find("lande").unwrap();
    let (classifier, _) = registry::classifier(spec).unwrap();
    for case in golden().cases {
        let got = classifier.ngrams().unwrap().featurize(&case.text);
        let nonzero: Vec<(usize, f32)> = got
            .iter()
            .copied()
            .enumerate()
            .filter(|&(_, v)| v != 0.0)
            .collect();
        assert_eq!(
            nonzero.len(),
            case.features.len(),
            "feature count for {:?}",
            case.text
        );
        for ((i, v), (wi, wv)) in nonzero.iter().zip(&case.features) {
            assert_eq!(
                (i, v.to_bits()),
                (wi, wv.to_bits()),
                "feature {wi} of {:?}: {v} vs {wv}",
                case.text
            );
        }
    }
}

#[test]
fn model_matches_lande_top1_and_probabilities() {
    let g = golden();
    let spec = registry::find("lande").unwrap();
    assert_eq!(
        spec.labels,
        g.labels.iter().map(String::as_str).collect::<Vec<_>>()
    );
    let (classifier, _) = registry::classifier(spec).unwrap();
    let texts: Vec<&str> = g.cases.iter().map(|c| c.text.as_str()).collect();
    let batched = classifier.classify(&texts).unwrap().scores;
    let mut worst = 0.0f32;
    for (case, scores) in g.cases.iter().zip(&batched) {
        let top = scores
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(i, _)| spec.labels[i])
            .unwrap();
        assert_eq!(top, case.top1, "top-1 for {:?}", case.text);
        for (got, want) in scores.iter().zip(&case.probabilities) {
            worst = worst.max((got - want).abs());
        }
    }
    assert!(worst <= PROB_TOLERANCE, "max |p - lande| = {worst}");
    // One text at a time gives the batch's answer.
    for (text, row) in texts.iter().zip(&batched).take(20) {
        let single = classifier.classify(&[text]).unwrap().scores;
        for (a, b) in single[0].iter().zip(row) {
            assert!(
                (a - b).abs() < 1e-6,
                "batching changed the result for {text:?}"
            );
        }
    }
}
