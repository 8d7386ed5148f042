//! The pre-shared key and the message tag: HMAC-SHA256 (RustCrypto's
//! `hmac` and `sha2`), verified in constant time.

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::Path;

use anyhow::{Context as _, Result, bail};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::wire::TAG_LEN;
use crate::file_owner;

/// Fewest key bytes accepted (`openssl rand -hex 32` writes 64).
pub const MIN_KEY_LEN: usize = 32;
const MAX_KEY_LEN: usize = 4096;

type HmacSha256 = Hmac<Sha256>;

/// The cluster's sync key. Two keys are equal when their bytes are: a
/// reload compares the key file's content with the running key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

impl Key {
    /// The key is the file's content without surrounding whitespace. The
    /// file must be a regular file that neither its group nor others may
    /// read or write, owned by root or by xlb's own user: a key others can
    /// read lets them forge messages, and one another user owns they can
    /// change, or let others read, at will.
    pub fn load(path: &Path) -> Result<Key> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("sync key {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("sync key {}", path.display()))?;
        if !meta.is_file() {
            bail!("sync key {} is not a regular file", path.display());
        }
        check_private(
            path,
            meta.mode(),
            meta.uid(),
            nix::unistd::geteuid().as_raw(),
        )?;
        let mut raw = Vec::new();
        file.by_ref()
            .take(MAX_KEY_LEN as u64 + 1)
            .read_to_end(&mut raw)
            .with_context(|| format!("reading sync key {}", path.display()))?;
        if raw.len() > MAX_KEY_LEN {
            bail!(
                "sync key {} is longer than {MAX_KEY_LEN} bytes",
                path.display()
            );
        }
        Key::from_bytes(raw.trim_ascii()).with_context(|| format!("sync key {}", path.display()))
    }

    pub fn from_bytes(key: &[u8]) -> Result<Key> {
        if key.len() < MIN_KEY_LEN {
            bail!(
                "{} bytes is too short: at least {MIN_KEY_LEN} (e.g. `openssl rand -hex 32`)",
                key.len()
            );
        }
        Ok(Key(key.to_vec()))
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }

    /// `signed` with its tag appended: the datagram to send.
    pub fn seal(&self, mut signed: Vec<u8>) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(&signed);
        signed.extend_from_slice(&mac.finalize().into_bytes());
        signed
    }

    /// Whether the last `TAG_LEN` bytes of `datagram` are the tag of the
    /// `signed_len` bytes before them.
    pub fn verify(&self, datagram: &[u8], signed_len: usize) -> bool {
        if datagram.len() != signed_len + TAG_LEN {
            return false;
        }
        let mut mac = self.mac();
        mac.update(&datagram[..signed_len]);
        mac.verify_slice(&datagram[signed_len..]).is_ok()
    }
}

/// A secret file of `mode` owned by `owner` is fit for a daemon running as
/// `euid`: no access for group or others, and root's or the daemon's own.
fn check_private(path: &Path, mode: u32, owner: u32, euid: u32) -> Result<()> {
    let mode = mode & 0o7777;
    if mode & 0o077 != 0 {
        bail!(
            "sync key {} has mode {mode:04o}: it must not be accessible to group or others \
             (chmod 600 {})",
            path.display(),
            path.display()
        );
    }
    if let Some(why) =
        file_owner::foreign(&format!("sync key {}", path.display()), path, owner, euid)
    {
        bail!(why);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sealed_message_verifies_and_any_change_does_not() {
        let key = Key::from_bytes(SECRET).unwrap();
        let d = key.seal(b"header and entries".to_vec());
        assert_eq!(d.len(), 18 + TAG_LEN);
        assert!(key.verify(&d, 18));
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 1;
            assert!(!key.verify(&bad, 18), "byte {i} flipped");
        }
        let other = Key::from_bytes(b"0123456789abcdef0123456789abcdeX").unwrap();
        assert!(!other.verify(&d, 18));
        assert!(!key.verify(&d[..d.len() - 1], 18));
    }

    #[test]
    fn the_tag_is_hmac_sha256_of_rfc_4231() {
        // RFC 4231 test case 2: key "Jefe" is too short for xlb, so check
        // the primitive directly against its published tag.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let tag = mac.finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn key_files_must_be_private_and_long_enough() {
        let dir = std::env::temp_dir().join(format!("xlb-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sync.key");
        std::fs::write(&path, b"0123456789abcdef0123456789abcdef0123\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = format!("{:#}", Key::load(&path).unwrap_err());
            assert!(
                err.contains(&format!("mode {mode:04o}")) && err.contains("chmod 600"),
                "{err}"
            );
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = Key::load(&path).unwrap();
        assert_eq!(key.0, b"0123456789abcdef0123456789abcdef0123");
        std::fs::write(&path, b"short\n").unwrap();
        let err = format!("{:#}", Key::load(&path).unwrap_err());
        assert!(err.contains("too short"), "{err}");
        let err = format!("{:#}", Key::load(&dir.join("missing")).unwrap_err());
        assert!(err.contains("missing"), "{err}");
        std::os::unix::fs::symlink(&path, dir.join("link")).unwrap();
        let err = format!("{:#}", Key::load(&dir.join("link")).unwrap_err());
        assert!(
            err.contains("link"),
            "a symbolic link is not followed: {err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_must_belong_to_root_or_the_daemons_user() {
        let p = Path::new("/etc/xlb/sync.key");
        for (mode, owner, euid, ok) in [
            (0o100600, 0, 0, true),
            (0o100400, 0, 990, true),
            (0o100600, 990, 990, true),
            (0o100600, 1000, 0, false),
            (0o100600, 1000, 990, false),
            (0o104600, 0, 0, true), // setuid on a data file: odd, not readable by others
            (0o100640, 0, 0, false),
            (0o100601, 0, 0, false),
        ] {
            assert_eq!(
                check_private(p, mode, owner, euid).is_ok(),
                ok,
                "mode {mode:o} owner {owner} euid {euid}"
            );
        }
        assert_eq!(
            check_private(p, 0o100600, 1000, 0).unwrap_err().to_string(),
            "sync key /etc/xlb/sync.key belongs to uid 1000: it must belong to root \
             (chown 0 /etc/xlb/sync.key)"
        );
        assert_eq!(
            check_private(p, 0o100600, 1000, 990)
                .unwrap_err()
                .to_string(),
            "sync key /etc/xlb/sync.key belongs to uid 1000: it must belong to root or uid \
             990, xlb's own (chown 990 /etc/xlb/sync.key)"
        );
    }
}
