//! Seeing certificate files change without a file-watching dependency: a fingerprint of each
//! file's length, modification time and inode, compared on a timer. Renaming a new file into
//! place (what certbot and Kubernetes secret mounts do) changes the inode; rewriting in place
//! changes the time or length.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A value that changes when any of `paths` changes; a missing file counts as a state too.
pub fn fingerprint<'a>(paths: impl IntoIterator<Item = &'a Path>) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for path in paths {
        match std::fs::metadata(path) {
            Ok(meta) => (meta.len(), meta.mtime(), meta.mtime_nsec(), meta.ino()).hash(&mut hasher),
            Err(err) => err.kind().hash(&mut hasher),
        }
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_when_a_file_is_replaced_and_not_otherwise() {
        let dir = std::env::temp_dir().join(format!("gh-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cert.pem");
        std::fs::write(&file, "one").unwrap();
        let first = fingerprint([file.as_path()]);
        assert_eq!(first, fingerprint([file.as_path()]));
        let staged = dir.join("cert.pem.new");
        std::fs::write(&staged, "two").unwrap();
        std::fs::rename(&staged, &file).unwrap();
        assert_ne!(first, fingerprint([file.as_path()]));
        std::fs::remove_file(&file).unwrap();
        let gone = fingerprint([file.as_path()]);
        assert_ne!(gone, first);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
