//! Who may open the control socket besides root: `control_socket_group`
//! (the socket's group: its members may connect and read the status) and
//! `control_socket_admin_group` (its members may also change state).
//! Reference: the top-level keys in `docs/config.md`; the checks on each
//! connection are `daemon::access`.

use serde::Deserialize;
use toml::Spanned;

use super::Validator;

/// A group as the file names it. A name is looked up (in `/etc/group` or
/// NSS) when `xlb run` or `xlb check` starts, not while parsing: parsing
/// stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRef {
    Name(String),
    Id(u32),
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupRef::Name(n) => write!(f, "group {n}"),
            GroupRef::Id(g) => write!(f, "gid {g}"),
        }
    }
}

/// The file's value: a name (string) or a numeric gid (integer).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawGroup {
    Id(i64),
    Name(String),
}

/// Longest group name accepted (glibc's `LOGIN_NAME_MAX` is 256; shadow's
/// `useradd` allows 32).
const MAX_GROUP_NAME: usize = 256;

impl Validator<'_> {
    /// `None` when absent or after an error (reported).
    pub(super) fn group(
        &mut self,
        raw: &Option<Spanned<RawGroup>>,
        field: &str,
    ) -> Option<GroupRef> {
        let raw = raw.as_ref()?;
        match raw.get_ref() {
            // (gid_t)-1 means "no change" to chown(2): not a group.
            RawGroup::Id(n) => match u32::try_from(*n) {
                Ok(g) if g != u32::MAX => Some(GroupRef::Id(g)),
                _ => {
                    self.error(
                        raw.span(),
                        field,
                        format!("{n} is not a group id (0..=4294967294)"),
                    );
                    None
                }
            },
            RawGroup::Name(name) => {
                let bad = name.is_empty()
                    || name.len() > MAX_GROUP_NAME
                    || name.starts_with('-')
                    || name
                        .chars()
                        .any(|c| c == ':' || c == ',' || c.is_whitespace() || c.is_control());
                if bad {
                    self.error(
                        raw.span(),
                        field,
                        format!(
                            "{name:?} is not a group name (a non-empty name without ':', ',', \
                             spaces or a leading '-'; or a numeric gid without quotes)"
                        ),
                    );
                    return None;
                }
                Some(GroupRef::Name(name.clone()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse_with_interface as parse;
    use super::*;

    #[test]
    fn no_group_without_the_keys() {
        let c = parse("").unwrap();
        assert_eq!(
            (c.control_socket_group, c.control_socket_admin_group),
            (None, None)
        );
    }

    #[test]
    fn a_group_is_a_name_or_a_numeric_gid() {
        let c =
            parse("control_socket_group = \"xlb\"\ncontrol_socket_admin_group = 4711\n").unwrap();
        assert_eq!(c.control_socket_group, Some(GroupRef::Name("xlb".into())));
        assert_eq!(c.control_socket_admin_group, Some(GroupRef::Id(4711)));
        assert_eq!(c.control_socket_group.unwrap().to_string(), "group xlb");
        assert_eq!(
            c.control_socket_admin_group.unwrap().to_string(),
            "gid 4711"
        );
    }

    #[test]
    fn bad_groups_are_named_with_line_and_what_was_found() {
        for (value, want) in [
            (
                "\"\"",
                "xlb.toml:2:24: control_socket_group: \"\" is not a group name",
            ),
            (
                "\"a:b\"",
                "xlb.toml:2:24: control_socket_group: \"a:b\" is not a group name",
            ),
            (
                "\"-x\"",
                "xlb.toml:2:24: control_socket_group: \"-x\" is not a group name",
            ),
            (
                "-1",
                "xlb.toml:2:24: control_socket_group: -1 is not a group id",
            ),
            (
                "4294967295",
                "xlb.toml:2:24: control_socket_group: 4294967295 is not a group id",
            ),
        ] {
            let e = parse(&format!("control_socket_group = {value}\n")).unwrap_err();
            assert!(e.contains(want), "{value}: {e}");
        }
        let e = parse("control_socket_admin_group = true\n").unwrap_err();
        assert!(e.contains("control_socket_admin_group"), "{e}");
    }

    #[test]
    fn the_docs_example_is_valid() {
        let block = super::super::tests::doc_blocks("toml")
            .into_iter()
            .find(|b| b.starts_with("control_socket = "))
            .expect("a toml block starting with control_socket in docs/config.md");
        let c = parse(&block).unwrap();
        assert_eq!(c.control_socket_group, Some(GroupRef::Name("xlb".into())));
        assert_eq!(
            c.control_socket_admin_group,
            Some(GroupRef::Name("xlb-admin".into()))
        );
    }
}
