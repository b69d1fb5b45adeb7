//! W3C Trace Context (`traceparent`): a request's trace id, taken from the
//! caller or started here, passed to every shard Worker a reply calls, so
//! each isolate's log line names the request it worked for.

/// `traceparent: 00-<trace id>-<parent span id>-<flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trace {
    /// 32 lowercase hex digits, never all zero.
    pub trace_id: String,
    /// This request's own span (16 hex digits): the parent of shard calls.
    pub span_id: String,
    /// Sampled flag as received (`01` for a trace started here).
    pub flags: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Trace {
    /// Continues the caller's trace when `header` is a valid version-00
    /// `traceparent`, else starts one from `random` (16 bytes of trace id,
    /// 8 of span id); the span is always new (this request's own).
    pub fn continue_or_start(header: Option<&str>, random: [u8; 24]) -> Trace {
        let span_id = hex(&random[16..]);
        let span_id = if span_id == "0000000000000000" {
            "0000000000000001".to_string()
        } else {
            span_id
        };
        if let Some(h) = header {
            let parts: Vec<&str> = h.trim().split('-').collect();
            if let [version, trace, parent, flags] = parts[..] {
                if version == "00"
                    && is_hex(trace, 32)
                    && trace != "0".repeat(32)
                    && is_hex(parent, 16)
                    && parent != "0".repeat(16)
                    && is_hex(flags, 2)
                {
                    return Trace {
                        trace_id: trace.to_string(),
                        span_id,
                        flags: flags.to_string(),
                    };
                }
            }
        }
        let mut trace_id = hex(&random[..16]);
        if trace_id == "0".repeat(32) {
            trace_id.replace_range(31.., "1");
        }
        Trace {
            trace_id,
            span_id,
            flags: "01".into(),
        }
    }

    /// The `traceparent` this request passes on (its span as parent).
    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.span_id, self.flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RANDOM: [u8; 24] = [0xab; 24];

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let t = Trace::continue_or_start(
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            RANDOM,
        );
        assert_eq!(t.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id, "abababababababab");
        assert_eq!(
            t.header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01"
        );
    }

    #[test]
    fn anything_else_starts_a_trace() {
        for bad in [
            None,
            Some(""),
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        ] {
            let t = Trace::continue_or_start(bad, RANDOM);
            assert_eq!(t.trace_id, "ab".repeat(16), "{bad:?}");
            assert_eq!(t.flags, "01");
        }
    }
}
