//! Who may own a file xlb trusts (its configuration, its sync key): root,
//! or the user xlb runs as. Anyone else can change the file, or its mode,
//! at will.

use std::path::Path;

/// Why `subject` (a file at `path` owned by `owner`) is not fit for a
/// daemon running as `euid`, with the `chown` that fixes it; `None` if it
/// is.
pub(crate) fn foreign(subject: &str, path: &Path, owner: u32, euid: u32) -> Option<String> {
    if owner == 0 || owner == euid {
        return None;
    }
    Some(format!(
        "{subject} belongs to uid {owner}: it must belong to root{} (chown {euid} {})",
        if euid == 0 {
            String::new()
        } else {
            format!(" or uid {euid}, xlb's own")
        },
        path.display()
    ))
}
