//! The manifest, the embedded bytes and build.rs's checks: every artifact is
//! what the manifest says, the weights load with the right shapes, and each
//! kind of broken model is refused with a message naming the model and the fix.

use edgeinfer_pipeline as check;

use std::path::PathBuf;

use edgeinfer::registry::{self, MODELS};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn manifest() -> check::Manifest {
    check::parse_manifest(&std::fs::read_to_string(models_dir().join("manifest.toml")).unwrap())
        .unwrap()
}

#[test]
fn registry_matches_manifest_and_embedded_bytes_match_sha256() {
    let manifest = manifest();
    assert_eq!(MODELS.len(), manifest.model.len());
    for (spec, entry) in MODELS.iter().zip(&manifest.model) {
        assert_eq!(spec.id, entry.id);
        assert_eq!(spec.version, entry.version);
        assert_eq!(
            spec.labels,
            entry.labels.iter().map(String::as_str).collect::<Vec<_>>()
        );
        assert_eq!(spec.sha256, entry.sha256.to_ascii_lowercase());
        // What is embedded is what the checks produce from the file with
        // that sha256: the file itself, or the sentence encoder packed.
        let checked = check::check_model(&models_dir(), &manifest.model, entry).unwrap();
        assert_eq!(
            check::sha256_hex(&checked.artifact),
            spec.sha256,
            "{}",
            spec.id
        );
        assert!(
            spec.artifact == checked.embedded,
            "embedded bytes of {}",
            spec.id
        );
        let packed: Option<&[u8]> = match spec.input {
            registry::InputSpec::Tokens { .. } => Some(b"EIBERT01"),
            registry::InputSpec::CharNgrams { .. }
            | registry::InputSpec::SentenceEmbedding { .. } => Some(b"EIDENSE1"),
            registry::InputSpec::Chat { .. } | registry::InputSpec::ShardedChat { .. } => {
                Some(b"EILLAMA3")
            }
            _ => None,
        };
        match packed {
            Some(magic) => assert!(spec.artifact.starts_with(magic), "{} is packed", spec.id),
            None => assert_eq!(
                spec.artifact, checked.artifact,
                "{} is embedded as is",
                spec.id
            ),
        }
        assert!(!entry.license.is_empty() && !entry.source.package.is_empty());
    }
}

#[test]
fn every_model_file_is_licensed_and_exported_by_a_committed_script() {
    for m in manifest().model {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(&m.export);
        assert!(
            script.exists(),
            "{}: export script {} is missing",
            m.id,
            m.export
        );
        assert!(
            m.license.contains("MIT") || m.license.contains("Apache"),
            "{}: license {:?}",
            m.id,
            m.license
        );
    }
}

#[test]
fn embedded_weights_load_with_the_right_shapes() {
    for spec in MODELS {
        match registry::load(spec).unwrap().0 {
            registry::Loaded::Classifier(classifier) => {
                let out = classifier.classify(&["a", "two words"]).unwrap().scores;
                assert_eq!(out.len(), 2);
                assert_eq!(out[0].len(), spec.labels.len());
                let sum: f32 = out[0].iter().sum();
                assert!(
                    (sum - 1.0).abs() < 1e-4,
                    "{}: output sums to {sum}",
                    spec.id
                );
            }
            registry::Loaded::Encoder(encoder) => {
                let (out, _) = encoder.encode(&["a", "two words"]).unwrap();
                assert_eq!(out.len(), 2);
                for e in &out {
                    assert_eq!(e.len(), encoder.dims(), "{}", spec.id);
                    let norm: f32 = e.iter().map(|v| v * v).sum::<f32>().sqrt();
                    assert!((norm - 1.0).abs() < 1e-3, "{}: norm {norm}", spec.id);
                }
            }
            registry::Loaded::Chat(chat) => {
                let decoder = chat.decoder();
                let context = match spec.input {
                    registry::InputSpec::Chat { context, .. }
                    | registry::InputSpec::ShardedChat { context, .. } => context,
                    _ => panic!("{} is a chat model", spec.id),
                };
                assert_eq!(decoder.config().context, context, "{}", spec.id);
                let registry::InputSpec::ShardedChat { shards, .. } = spec.input else {
                    let mut cache = decoder.new_cache();
                    let logits = decoder.forward(&mut cache, &chat.template().begin).unwrap();
                    assert_eq!(logits.len(), decoder.config().vocab, "{}", spec.id);
                    assert!(logits.iter().all(|l| l.is_finite()), "{}", spec.id);
                    assert_eq!(cache.len(), 1);
                    continue;
                };
                // The front holds the config alone; the shards hold every
                // layer once, in order, the first embedding, the last predicting.
                assert!(!chat.is_local() && decoder.layers() == 0, "{}", spec.id);
                let layers = decoder.part().model_layers;
                assert!(shards[0].embeds && shards[shards.len() - 1].predicts);
                assert_eq!(shards[0].first_layer, 0);
                assert_eq!(shards[shards.len() - 1].end_layer, layers);
                assert!(shards
                    .windows(2)
                    .all(|w| w[0].end_layer == w[1].first_layer));
            }
        }
    }
}

#[test]
fn lande_graph_has_the_lande_topology() {
    use tract_onnx::prelude::*;
    // The ONNX file build.rs packed (the worker embeds the packed form).
    let onnx = std::fs::read(models_dir().join("lande/lande.onnx")).unwrap();
    let model = tract_onnx::onnx()
        .model_for_read(&mut &onnx[..])
        .unwrap()
        .into_typed()
        .unwrap();
    let shapes: Vec<Vec<usize>> = model
        .nodes()
        .iter()
        .filter_map(|n| n.op_as::<tract_onnx::tract_core::ops::konst::Const>())
        .map(|c| c.val().shape().to_vec())
        .filter(|s| s.len() == 2)
        .collect();
    // 620 -> 120 -> 50, as lande's t50 network.
    assert!(
        shapes.contains(&vec![120, 620]) || shapes.contains(&vec![620, 120]),
        "{shapes:?}"
    );
    assert!(
        shapes.contains(&vec![50, 120]) || shapes.contains(&vec![120, 50]),
        "{shapes:?}"
    );
}

fn lande_entry() -> check::ModelEntry {
    manifest()
        .model
        .into_iter()
        .find(|m| m.id == "lande")
        .unwrap()
}

/// The check's refusal of lande's entry edited by `edit`.
fn lande_refused(edit: impl FnOnce(&mut check::ModelEntry)) -> check::CheckError {
    let mut m = lande_entry();
    edit(&mut m);
    check::check_model(&models_dir(), &manifest().model, &m).expect_err("must fail")
}

fn assert_names_model_and_fix(e: &check::CheckError, what: &str) {
    let text = e.to_string();
    assert!(text.contains("model `lande`"), "{text}");
    assert!(text.contains(what), "{text}");
    assert!(text.contains("fix:") && e.fix.len() > 10, "{text}");
}

#[test]
fn hash_mismatch_fails_the_check() {
    let e = lande_refused(|m| m.sha256 = "0".repeat(64));
    assert_names_model_and_fix(&e, "sha256");
    assert!(e.fix.contains("export.sh"));
}

#[test]
fn missing_file_fails_the_check() {
    let e = lande_refused(|m| m.artifact = "lande/missing.onnx".into());
    assert_names_model_and_fix(&e, "cannot read models/lande/missing.onnx");
}

#[test]
fn unsupported_graph_fails_the_check() {
    let m = lande_entry();
    let checked = check::check_model(&models_dir(), &manifest().model, &m).unwrap();
    let e = check::check_graph(&m, &checked.input, b"this is not an onnx protobuf")
        .expect_err("must fail");
    assert_names_model_and_fix(&e, "cannot read models/lande/lande.onnx as an ONNX graph");
    // A valid graph whose output does not match the labels.
    let mut wrong = lande_entry();
    wrong.labels.pop();
    let e = check::check_graph(&wrong, &checked.input, &checked.artifact).expect_err("must fail");
    assert_names_model_and_fix(&e, "graph output");
}

#[test]
fn unsupported_task_and_duplicate_ids_fail() {
    let e = lande_refused(|m| m.task = "image-generation".into());
    assert_names_model_and_fix(&e, "unsupported task");
    let text = std::fs::read_to_string(models_dir().join("manifest.toml")).unwrap();
    let doubled = format!("{text}\n{}", &text[text.find("[[model]]").unwrap()..]);
    let e = check::parse_manifest(&doubled).expect_err("must fail");
    assert!(e.to_string().contains("twice"), "{e}");
}

/// The decoder's ONNX graph, decoded, changed by `edit`, encoded again.
fn edited_tinylm(edit: impl FnOnce(&mut tract_onnx::pb::GraphProto)) -> Vec<u8> {
    use prost::Message;
    let bytes = std::fs::read(models_dir().join("tinylm/model.onnx")).unwrap();
    let mut model = tract_onnx::pb::ModelProto::decode(&bytes[..]).unwrap();
    edit(model.graph.as_mut().unwrap());
    model.encode_to_vec()
}

/// The decoder packer refuses a graph that is not the architecture the
/// engine implements, naming the node that differs.
#[test]
fn a_decoder_of_another_architecture_fails_with_the_node() {
    // The unchanged graph packs.
    check::pack_llama::pack(&edited_tinylm(|_| ())).expect("the shipped graph packs");
    // SwiGLU's sigmoid swapped for another activation.
    let bytes = edited_tinylm(|g| {
        let n = g.node.iter_mut().find(|n| n.op_type == "Sigmoid").unwrap();
        n.op_type = "Relu".into();
    });
    let e = check::pack_llama::pack(&bytes).expect_err("must fail");
    assert!(e.contains("(Relu)") && e.contains("Sigmoid"), "{e}");
    // A node the matcher never reaches (here: a second use of an input).
    let bytes = edited_tinylm(|g| {
        let mut extra = g.node[0].clone();
        extra.name = "stray".into();
        extra.output = vec!["stray_out".into()];
        g.node.push(extra);
    });
    let e = check::pack_llama::pack(&bytes).expect_err("must fail");
    assert!(
        e.contains("\"stray\"") && e.contains("not part of the architecture"),
        "{e}"
    );
    // A mask that lets a query see later keys (Less swapped for Greater).
    let bytes = edited_tinylm(|g| {
        let n = g.node.iter_mut().find(|n| n.op_type == "Less").unwrap();
        n.op_type = "Greater".into();
    });
    let e = check::pack_llama::pack(&bytes).expect_err("must fail");
    assert!(e.contains("(Greater)"), "{e}");
}

/// The manifest's stated shape must be the model's.
#[test]
fn a_decoder_shape_other_than_the_manifests_fails() {
    let mut m = manifest()
        .model
        .into_iter()
        .find(|m| m.id == "shakespeare-llama")
        .unwrap();
    if let check::InputEntry::ChatTokens { layers, .. } = &mut m.input {
        *layers = 5;
    }
    let e = check::check_model(&models_dir(), &manifest().model, &m).expect_err("must fail");
    let text = e.to_string();
    assert!(
        text.contains("model `shakespeare-llama`") && text.contains("the manifest says"),
        "{text}"
    );
}

/// wrangler.toml binds the front worker to exactly the shard Workers that
/// build.rs planned (and scripts/build-shards builds): same bindings, same
/// script names, in order.
#[test]
fn wrangler_toml_binds_the_planned_shards() {
    let text =
        std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wrangler.toml"))
            .unwrap();
    let config: toml::Table = toml::from_str(&text).unwrap();
    let bound: Vec<(String, String)> = config
        .get("services")
        .and_then(|s| s.as_array())
        .map(|list| {
            list.iter()
                .map(|s| {
                    let field =
                        |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
                    (field("binding"), field("service"))
                })
                .collect()
        })
        .unwrap_or_default();
    // Models a user added (models/local.toml) are bound by
    // scripts/nobuild-config, not by wrangler.toml.
    let local: Vec<String> = std::fs::read_to_string(models_dir().join(check::LOCAL_MANIFEST))
        .ok()
        .and_then(|text| check::parse_manifest(&text).ok())
        .map(|m| m.model.into_iter().map(|m| m.id).collect())
        .unwrap_or_default();
    let planned: Vec<(String, String)> = MODELS
        .iter()
        .filter(|m| !local.iter().any(|id| id == m.id))
        .filter_map(|m| match m.input {
            registry::InputSpec::ShardedChat { shards, .. } => Some(shards),
            _ => None,
        })
        .flatten()
        .map(|s| (s.binding.to_string(), s.script.to_string()))
        .collect();
    assert!(!planned.is_empty());
    assert_eq!(
        bound, planned,
        "wrangler.toml [[services]] must bind the planned shards (binding, service)"
    );
}
