//! The directory a mount goes on: checked before anything is mounted, and cleared of a stale mount that a
//! killed process left behind.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `ENOTCONN`: what the kernel answers for a FUSE mount whose process is gone.
const ENOTCONN: i32 = 107;

#[derive(Debug, thiserror::Error)]
pub enum MountpointError {
    #[error("{0}: no such directory (make it first)")]
    Missing(PathBuf),
    #[error("{0} is not a directory")]
    NotDirectory(PathBuf),
    #[error("{0} is not empty: mount on an empty directory, so that nothing in it is hidden")]
    NotEmpty(PathBuf),
    #[error(
        "{0} is already a mount point (is another `huds mount` serving it? stop it, or run `fusermount3 -u {0}`)"
    )]
    Busy(PathBuf),
    #[error(
        "{path} holds a stale mount left by a process that is gone, and it could not be cleared ({why}): run `fusermount3 -uz {path}`"
    )]
    Stale { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Checks that `dir` can take a mount: an empty directory that is not a mount point already. A stale FUSE
/// mount on it (its process was killed) is cleared first; the answer then says so, for the user to see.
pub fn prepare(dir: &Path) -> Result<Option<String>, MountpointError> {
    let abs = absolute(dir)?;
    let mut cleared = None;
    let mut meta = std::fs::metadata(&abs);
    // A mount whose process is gone answers ENOTCONN, unless the kernel still holds the root's attributes:
    // a lookup of a name no one has (never cached) asks the filesystem itself.
    let dead = match &meta {
        Err(e) => e.raw_os_error() == Some(ENOTCONN),
        Ok(_) => is_mount_point(&abs).unwrap_or(false) && answers_enotconn(&abs),
    };
    if dead {
        // Only a huds mount is cleared: another filesystem's dead mount is its owner's to deal with.
        match mount_entry(&abs) {
            Some((fstype, source)) if fstype.starts_with("fuse") && source == "huds" => {}
            other => {
                return Err(MountpointError::Stale {
                    path: abs,
                    why: match other {
                        Some((fstype, source)) => {
                            format!("it is a {fstype} mount of {source}, not one of huds")
                        }
                        None => "it is not in the mount table".to_string(),
                    },
                });
            }
        }
        clear_stale(&abs)?;
        cleared = Some(format!(
            "cleared a stale mount at {} left by a huds mount that is gone",
            abs.display()
        ));
        meta = std::fs::metadata(&abs);
    }
    let meta = match meta {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MountpointError::Missing(abs));
        }
        Err(source) => return Err(MountpointError::Io { path: abs, source }),
    };
    if !meta.is_dir() {
        return Err(MountpointError::NotDirectory(abs));
    }
    if is_mount_point(&abs).map_err(|source| MountpointError::Io {
        path: abs.clone(),
        source,
    })? {
        return Err(MountpointError::Busy(abs));
    }
    let mut entries = std::fs::read_dir(&abs).map_err(|source| MountpointError::Io {
        path: abs.clone(),
        source,
    })?;
    if entries.next().is_some() {
        return Err(MountpointError::NotEmpty(abs));
    }
    Ok(cleared)
}

/// Whether the filesystem mounted on `dir` answers ENOTCONN: its FUSE process is gone.
fn answers_enotconn(dir: &Path) -> bool {
    matches!(
        std::fs::symlink_metadata(dir.join(".huds-mount-probe")),
        Err(e) if e.raw_os_error() == Some(ENOTCONN)
    )
}

/// `dir` as the mount table writes it: its parent resolved (symlinks, `..`), its own name kept, since a stale
/// mount on it cannot be resolved.
fn absolute(dir: &Path) -> Result<PathBuf, MountpointError> {
    let abs = std::path::absolute(dir).map_err(|source| MountpointError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(resolved(&abs))
}

/// `abs` with its parent canonicalised, where that works.
fn resolved(abs: &Path) -> PathBuf {
    match (abs.parent(), abs.file_name()) {
        (Some(parent), Some(name)) => std::fs::canonicalize(parent)
            .map(|p| p.join(name))
            .unwrap_or_else(|_| abs.to_path_buf()),
        _ => abs.to_path_buf(),
    }
}

/// Lazily unmounts `dir`: with `fusermount3` (what a user without root has), else `umount`.
fn clear_stale(dir: &Path) -> Result<(), MountpointError> {
    let mut why = Vec::new();
    for (program, args) in [("fusermount3", &["-u", "-z"][..]), ("umount", &["-l"][..])] {
        match Command::new(program).args(args).arg(dir).output() {
            Ok(out) if out.status.success() => return Ok(()),
            Ok(out) => why.push(format!(
                "{program}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => why.push(format!("{program}: {e}")),
        }
    }
    Err(MountpointError::Stale {
        path: dir.to_path_buf(),
        why: why.join("; "),
    })
}

/// The filesystem type and source of the last mount on `dir` (absolute), from `/proc/self/mountinfo`.
fn mount_entry(dir: &Path) -> Option<(String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4).is_none_or(|p| Path::new(&unescape(p)) != dir) {
            return None;
        }
        // After the optional fields, " - " then the type and the source.
        let dash = fields.iter().position(|f| *f == "-")?;
        Some((
            unescape(fields.get(dash + 1)?),
            unescape(fields.get(dash + 2)?),
        ))
    })
}

/// Whether `dir` (absolute) is where something is mounted, from `/proc/self/mountinfo`.
pub fn is_mount_point(dir: &Path) -> io::Result<bool> {
    let dir = resolved(&std::path::absolute(dir)?);
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|field| Path::new(&unescape(field)) == dir))
}

/// Sets the read-ahead (KiB) of the filesystem mounted on `dir` through its backing device's sysfs entry,
/// `/sys/class/bdi/MAJOR:MINOR/read_ahead_kb` (writable by root). Touches nothing on the mount itself, so it is
/// safe before the mount serves requests.
pub fn raise_readahead(dir: &Path, kib: u32) -> io::Result<()> {
    let dir = std::path::absolute(dir)?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let device = info
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4).is_some_and(|p| Path::new(&unescape(p)) == dir))
        .and_then(|f| f.get(2).map(|d| d.to_string()))
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not in the mount table"))?;
    if !device.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "odd device number",
        ));
    }
    std::fs::write(
        format!("/sys/class/bdi/{device}/read_ahead_kb"),
        kib.to_string(),
    )
}

/// Undoes mountinfo's octal escapes (`\040` for a space, and so on).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if bytes[i] == b'\\'
            && let Some(d) = octal
        {
            out.push(
                d.iter()
                    .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_undone() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/mnt/tab\011x\134y"), "/mnt/tab\tx\\y");
        assert_eq!(unescape(r"/plain"), "/plain");
        assert_eq!(unescape(r"/short\04"), r"/short\04");
    }

    #[test]
    fn a_directory_that_cannot_take_a_mount_is_refused_with_its_reason() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("nope");
        assert!(matches!(
            prepare(&missing),
            Err(MountpointError::Missing(_))
        ));
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        assert!(matches!(
            prepare(&file),
            Err(MountpointError::NotDirectory(_))
        ));
        let full = tmp.path().join("full");
        std::fs::create_dir(&full).expect("mkdir");
        std::fs::write(full.join("a"), b"x").expect("write");
        let err = prepare(&full).expect_err("a non-empty directory is refused");
        assert!(err.to_string().contains("is not empty"), "{err}");
        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).expect("mkdir");
        assert_eq!(prepare(&empty).expect("an empty directory is fine"), None);
        assert!(matches!(
            prepare(Path::new("/proc")),
            Err(MountpointError::Busy(_))
        ));
    }
}
