//! A/B splits: a stable fraction of the callers who ask for a model by its
//! bare `id` get a variant model instead (a new version of a head, say),
//! configured by the `MODEL_VARIANTS` variable:
//!
//! ```text
//! MODEL_VARIANTS = '{"sentiment": {"variant": "sentiment@1.1.0", "fraction": 0.1}}'
//! ```
//!
//! The arm is a hash of the experiment and the caller (the API key's digest,
//! else the client IP), so a caller sees one model for as long as the
//! configuration stays, and changing one experiment does not reshuffle
//! another. Asking for `id@version` pins a model and bypasses the split;
//! callers with nothing to hash on get the control.

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::CoreError;
use crate::registry::{self, ModelSpec};

/// Which side of a split a request landed on (the `x-edgeinfer-variant` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm {
    Control,
    Variant,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Arm::Control => "control",
            Arm::Variant => "variant",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitEntry {
    variant: String,
    fraction: f64,
}

#[derive(Debug, Clone, Copy)]
struct Split {
    control: &'static ModelSpec,
    variant: &'static ModelSpec,
    fraction: f64,
}

/// The configured splits, by the bare model id they apply to.
#[derive(Debug, Default)]
pub struct Variants {
    splits: BTreeMap<String, Split>,
}

impl Variants {
    /// Parses `MODEL_VARIANTS`; unset or blank means no splits. Every error
    /// names the entry and what to change, since a typo here would otherwise
    /// silently send all traffic to one arm.
    pub fn parse(var: Option<&str>) -> Result<Self, String> {
        let Some(text) = var.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Variants::default());
        };
        let entries: BTreeMap<String, SplitEntry> = serde_json::from_str(text).map_err(|e| {
            format!(
                "MODEL_VARIANTS is not a JSON object of {{\"<model id>\": {{\"variant\": \"<id@version>\", \"fraction\": 0.1}}}}: {e}"
            )
        })?;
        let mut splits = BTreeMap::new();
        for (id, entry) in entries {
            if id.contains('@') {
                return Err(format!(
                    "MODEL_VARIANTS: key {id:?} has a version; use the bare id callers ask for"
                ));
            }
            let control = registry::find(&id)
                .map_err(|_| format!("MODEL_VARIANTS: {id:?} is not an embedded model"))?;
            let variant = registry::find(&entry.variant).map_err(|_| {
                format!(
                    "MODEL_VARIANTS: the variant {:?} of {id:?} is not an embedded model",
                    entry.variant
                )
            })?;
            if variant.task != control.task {
                return Err(format!(
                    "MODEL_VARIANTS: {id:?} is a {} model but its variant {:?} is a {} model",
                    control.task.as_str(),
                    entry.variant,
                    variant.task.as_str()
                ));
            }
            if !(0.0..=1.0).contains(&entry.fraction) {
                return Err(format!(
                    "MODEL_VARIANTS: the fraction of {id:?} is {}; use 0 to 1",
                    entry.fraction
                ));
            }
            splits.insert(
                id,
                Split {
                    control,
                    variant,
                    fraction: entry.fraction,
                },
            );
        }
        Ok(Variants { splits })
    }

    /// The model that serves a request for `name`, and the arm when a split
    /// decided it.
    pub fn resolve(
        &self,
        name: &str,
        subject: Option<&str>,
    ) -> Result<(&'static ModelSpec, Option<Arm>), CoreError> {
        let (Some(split), Some(subject)) = (self.splits.get(name), subject) else {
            return registry::find(name).map(|spec| (spec, None));
        };
        let arm = arm_of(name, subject, split.fraction);
        let spec = match arm {
            Arm::Control => split.control,
            Arm::Variant => split.variant,
        };
        Ok((spec, Some(arm)))
    }
}

/// What a split hashes on: the caller's API key digest, so a key stays on
/// one arm wherever it calls from; without keys, the client's IP.
pub fn subject<'a>(owner: Option<&'a str>, client_ip: Option<&'a str>) -> Option<&'a str> {
    owner.or(client_ip)
}

/// The arm of `subject` in the experiment on `model`: the first 8 bytes of
/// sha256(model, subject) as a fraction of 2^64, below `fraction` = variant.
fn arm_of(model: &str, subject: &str, fraction: f64) -> Arm {
    let mut hash = Sha256::new();
    hash.update(model.as_bytes());
    hash.update([0]);
    hash.update(subject.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let point = u64::from_be_bytes(first) as f64 / 2f64.powi(64);
    if point < fraction {
        Arm::Variant
    } else {
        Arm::Control
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(fraction: f64) -> Variants {
        Variants::parse(Some(&format!(
            r#"{{"sentiment": {{"variant": "sentiment@1.1.0", "fraction": {fraction}}}}}"#
        )))
        .unwrap()
    }

    #[test]
    fn the_split_is_stable_and_near_its_fraction() {
        let v = with(0.25);
        let mut variant = 0;
        for i in 0..4000 {
            let subject = format!("caller-{i}");
            let (spec, arm) = v.resolve("sentiment", Some(&subject)).unwrap();
            assert_eq!(v.resolve("sentiment", Some(&subject)).unwrap().1, arm);
            match arm {
                Some(Arm::Variant) => {
                    variant += 1;
                    assert_eq!(spec.version, "1.1.0");
                }
                Some(Arm::Control) => assert_eq!(spec.version, "1.0.0"),
                None => panic!("no arm"),
            }
        }
        // Binomial(4000, 0.25): sd 27, so +-150 is over 5 sd.
        assert!((850..=1150).contains(&variant), "{variant} of 4000");
    }

    #[test]
    fn pins_other_models_and_anonymous_callers_bypass_it() {
        let v = with(1.0);
        assert_eq!(v.resolve("sentiment@1.0.0", Some("k")).unwrap().1, None);
        assert_eq!(v.resolve("lande", Some("k")).unwrap().1, None);
        let (spec, arm) = v.resolve("sentiment", None).unwrap();
        assert_eq!((spec.version, arm), ("1.0.0", None));
        assert_eq!(
            v.resolve("sentiment", Some("k")).unwrap().1,
            Some(Arm::Variant)
        );
        assert_eq!(
            with(0.0).resolve("sentiment", Some("k")).unwrap().1,
            Some(Arm::Control)
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (config, says) in [
            ("{", "not a JSON object"),
            (
                r#"{"nope": {"variant": "lande", "fraction": 0.1}}"#,
                "not an embedded model",
            ),
            (
                r#"{"sentiment": {"variant": "lande", "fraction": 0.1}}"#,
                "is a language-identification model",
            ),
            (
                r#"{"sentiment": {"variant": "sentiment@1.1.0", "fraction": 1.5}}"#,
                "use 0 to 1",
            ),
            (
                r#"{"sentiment@1.0.0": {"variant": "sentiment@1.1.0", "fraction": 0.5}}"#,
                "bare id",
            ),
            (
                r#"{"sentiment": {"variant": "sentiment@1.1.0", "share": 0.5}}"#,
                "unknown field",
            ),
        ] {
            let e = Variants::parse(Some(config)).unwrap_err();
            assert!(e.contains(says), "{config}: {e}");
        }
        assert!(Variants::parse(Some("  ")).unwrap().splits.is_empty());
    }
}
