//! The `[metrics]` section: where `/metrics` is served for Prometheus
//! (reference: the `[metrics]` section of `docs/config.md`, and the
//! metrics reference in `docs/operations.md`).

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

/// Serve the counters and states of `xlb status` as Prometheus metrics
/// (OpenMetrics text) over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The TCP address and port `GET /metrics` is answered on.
    pub listen: SocketAddr,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    listen: Spanned<String>,
}

impl Validator<'_> {
    /// `None` after an error (reported).
    pub(super) fn metrics(&mut self, raw: &Spanned<RawMetrics>) -> Option<MetricsConfig> {
        let listen = &raw.get_ref().listen;
        let text = listen.get_ref();
        match text.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                self.error(
                    listen.span(),
                    "metrics.listen",
                    format!("{text:?} has port 0: Prometheus needs a fixed port"),
                );
                None
            }
            Ok(a) if a.ip().is_multicast() => {
                self.error(
                    listen.span(),
                    "metrics.listen",
                    format!("{text:?} is a multicast address"),
                );
                None
            }
            Ok(a) => Some(MetricsConfig { listen: a }),
            Err(_) => {
                self.error(
                    listen.span(),
                    "metrics.listen",
                    format!(
                        "{text:?} is not an address and port, e.g. \"127.0.0.1:9477\" or \
                         \"[::1]:9477\""
                    ),
                );
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse_with_interface as parse;
    use super::*;

    #[test]
    fn off_without_the_section() {
        assert_eq!(parse("").unwrap().metrics, None);
    }

    #[test]
    fn listen_takes_ipv4_and_ipv6() {
        for (text, want) in [
            ("127.0.0.1:9477", "127.0.0.1:9477"),
            ("[::1]:9477", "[::1]:9477"),
            ("0.0.0.0:9100", "0.0.0.0:9100"),
        ] {
            let c = parse(&format!("[metrics]\nlisten = \"{text}\"\n")).unwrap();
            assert_eq!(
                c.metrics.unwrap().listen,
                want.parse::<SocketAddr>().unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_values_are_named_with_line_and_what_was_found() {
        for (value, want) in [
            (
                "localhost:9477",
                "xlb.toml:3:10: metrics.listen: \"localhost:9477\" is not an address and port",
            ),
            (
                "127.0.0.1",
                "xlb.toml:3:10: metrics.listen: \"127.0.0.1\" is not an address and port",
            ),
            (
                "127.0.0.1:0",
                "xlb.toml:3:10: metrics.listen: \"127.0.0.1:0\" has port 0",
            ),
            (
                "[ff02::1]:9477",
                "xlb.toml:3:10: metrics.listen: \"[ff02::1]:9477\" is a multicast address",
            ),
        ] {
            let e = parse(&format!("[metrics]\nlisten = \"{value}\"\n")).unwrap_err();
            assert!(e.contains(want), "{value}: {e}");
        }
    }

    #[test]
    fn listen_is_required_and_unknown_fields_refused() {
        let e = parse("[metrics]\n").unwrap_err();
        assert!(e.contains("listen"), "{e}");
        let e = parse("[metrics]\nlisten = \"127.0.0.1:9477\"\npath = \"/m\"\n").unwrap_err();
        assert!(e.contains("xlb.toml:4:") && e.contains("path"), "{e}");
    }

    #[test]
    fn the_docs_example_is_valid() {
        let block = super::super::tests::doc_blocks("toml")
            .into_iter()
            .find(|b| b.starts_with("[metrics]"))
            .expect("a toml block starting with [metrics] in docs/config.md");
        let m = parse(&block).unwrap().metrics.unwrap();
        assert_eq!(m.listen, "127.0.0.1:9477".parse::<SocketAddr>().unwrap());
    }
}
