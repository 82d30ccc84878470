//! The members of a layer's tar stream, each with what its extension headers say: GNU long
//! names and link names, and PAX records (path, link path, owners, extended attributes).
//!
//! The tar crate reads those headers itself, each whole into memory whatever size it
//! declares: a few hundred kilobytes of gzip can carry a PAX record of hundreds of
//! megabytes. So berth reads the stream raw and the extension headers itself, refusing any
//! larger than [`MAX_HEADER_RECORD`] before a byte of it is buffered.
//!
//! Refused as well, since berth could not unpack them as other tar readers do:
//! - GNU sparse files (type `S`, or PAX `GNU.sparse.*` records). Their holes expand to zeros
//!   that are not in the stream, so a layer of a few kilobytes can ask for terabytes outside
//!   the unpack budget; no image builder writes them (Docker, BuildKit, buildah, kaniko and
//!   Go's or Python's tar writers have no sparse output).
//! - A PAX `size` record that differs from its header's size: readers would disagree on
//!   where the next header starts (a file of 8 GiB or more, whose size only PAX can state,
//!   is one such).

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// What one extension header (a long name, a link name, a PAX record set) may hold: a path
/// is at most 4 KiB on Linux, a few extended attributes fit in far less.
pub const MAX_HEADER_RECORD: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MemberError {
    #[error("corrupt tar")]
    Corrupt(#[source] io::Error),
    #[error("{0}")]
    Refused(String),
}

/// One member: its header (with the owners PAX records give applied), its path and link
/// target as the extension headers say, its PAX records, and its data.
pub struct Member<'a, R: Read> {
    pub header: tar::Header,
    pub path: PathBuf,
    pub link: Option<PathBuf>,
    pax: Option<Vec<u8>>,
    pub data: tar::Entry<'a, R>,
}

impl<R: Read> std::fmt::Debug for Member<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("path", &self.path)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Member<'_, R> {
    /// The PAX records that describe this member (key, value).
    pub fn pax_records(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.pax
            .as_deref()
            .into_iter()
            .flat_map(tar::PaxExtensions::new)
            .flatten()
            .map(|e| (e.key_bytes(), e.value_bytes()))
    }
}

/// The extension headers read so far for the member that follows them.
#[derive(Default)]
struct Extensions {
    name: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

/// The members of a tar stream, in order.
pub struct Members<'a, R: 'a + Read> {
    entries: tar::Entries<'a, R>,
}

impl<R: Read> std::fmt::Debug for Members<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members").finish_non_exhaustive()
    }
}

impl<'a, R: 'a + Read> Members<'a, R> {
    pub fn new(archive: &'a mut tar::Archive<R>) -> Result<Members<'a, R>, MemberError> {
        let entries = archive.entries().map_err(MemberError::Corrupt)?;
        Ok(Members {
            entries: entries.raw(true),
        })
    }

    /// The next member; `None` at the end of the archive.
    pub fn next_member(&mut self) -> Option<Result<Member<'a, R>, MemberError>> {
        let mut ext = Extensions::default();
        loop {
            let Some(entry) = self.entries.next() else {
                let dangling = ext.name.is_some() || ext.link.is_some() || ext.pax.is_some();
                return dangling.then(|| {
                    Err(MemberError::Corrupt(io::Error::other(
                        "extension headers describe a member that never comes",
                    )))
                });
            };
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => return Some(Err(MemberError::Corrupt(e))),
            };
            let slot = match entry.header().entry_type() {
                tar::EntryType::GNULongName => Some((&mut ext.name, "GNU long name")),
                tar::EntryType::GNULongLink => Some((&mut ext.link, "GNU long link name")),
                tar::EntryType::XHeader => Some((&mut ext.pax, "PAX")),
                // Global records (a comment, a default mtime) change nothing berth writes;
                // their data is skipped, never buffered.
                tar::EntryType::XGlobalHeader => continue,
                _ => None,
            };
            let Some((slot, what)) = slot else {
                return Some(member(entry, ext));
            };
            if slot.is_some() {
                let message = format!("two {what} headers describe one member");
                return Some(Err(MemberError::Refused(message)));
            }
            match read_record(&mut entry, what) {
                Ok(bytes) => *slot = Some(bytes),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// An extension header's data, refused before it is read when larger than the cap.
fn read_record<R: Read>(entry: &mut tar::Entry<'_, R>, what: &str) -> Result<Vec<u8>, MemberError> {
    let size = entry.size();
    if size > MAX_HEADER_RECORD {
        return Err(MemberError::Refused(format!(
            "a {what} header of {size} bytes, more than the {MAX_HEADER_RECORD} berth reads"
        )));
    }
    let mut bytes = Vec::new();
    entry
        .take(MAX_HEADER_RECORD)
        .read_to_end(&mut bytes)
        .map_err(MemberError::Corrupt)?;
    Ok(bytes)
}

fn member<'a, R: Read>(
    entry: tar::Entry<'a, R>,
    ext: Extensions,
) -> Result<Member<'a, R>, MemberError> {
    let mut header = entry.header().clone();
    let pax_value = |key: &[u8]| -> Option<Vec<u8>> {
        let pax = ext.pax.as_deref()?;
        tar::PaxExtensions::new(pax)
            .flatten()
            .find(|e| e.key_bytes() == key)
            .map(|e| e.value_bytes().to_vec())
    };
    let number = |key: &[u8]| -> Option<u64> {
        pax_value(key).and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok())
    };
    let shown = || String::from_utf8_lossy(&header.path_bytes()).into_owned();
    let sparse = header.entry_type() == tar::EntryType::GNUSparse
        || ext.pax.as_deref().is_some_and(|pax| {
            tar::PaxExtensions::new(pax)
                .flatten()
                .any(|e| e.key_bytes().starts_with(b"GNU.sparse."))
        });
    if sparse {
        return Err(MemberError::Refused(format!(
            "entry {} is a sparse file, which berth does not unpack (its holes would expand \
             outside the unpack budget; no image builder writes sparse entries)",
            shown()
        )));
    }
    if let Some(size) = pax_value(b"size") {
        let stated = String::from_utf8_lossy(&size).into_owned();
        if stated.parse::<u64>().ok() != Some(entry.size()) {
            return Err(MemberError::Refused(format!(
                "entry {}: its PAX size ({stated}) is not its header's ({}), so tar readers \
                 would disagree on where the next entry starts",
                shown(),
                entry.size()
            )));
        }
    }
    if let Some(uid) = number(b"uid") {
        header.set_uid(uid);
    }
    if let Some(gid) = number(b"gid") {
        header.set_gid(gid);
    }
    let path = ext
        .name
        .map(without_nul)
        .or_else(|| pax_value(b"path"))
        .unwrap_or_else(|| header.path_bytes().into_owned());
    let link = ext
        .link
        .map(without_nul)
        .or_else(|| pax_value(b"linkpath"))
        .or_else(|| header.link_name_bytes().map(std::borrow::Cow::into_owned));
    Ok(Member {
        path: PathBuf::from(OsString::from_vec(path)),
        link: link.map(|l| PathBuf::from(OsString::from_vec(l))),
        header,
        pax: ext.pax,
        data: entry,
    })
}

/// A GNU long name as stored: NUL-terminated.
fn without_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    if bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(bytes: &[u8]) -> Result<Vec<(PathBuf, Option<PathBuf>, u64)>, MemberError> {
        let mut archive = tar::Archive::new(bytes);
        let mut all = Members::new(&mut archive)?;
        let mut out = Vec::new();
        while let Some(m) = all.next_member() {
            let m = m?;
            out.push((m.path.clone(), m.link.clone(), m.header.uid().unwrap_or(0)));
        }
        Ok(out)
    }

    /// A header of `kind` with `size` bytes of data following (zeros), for raw streams.
    fn raw(kind: tar::EntryType, name: &str, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_path(name).unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    #[test]
    fn long_names_links_and_pax_records_name_the_member() {
        let long = format!("{}/file", "d".repeat(200));
        let target = format!("{}/target", "t".repeat(200));
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, &long, &target).unwrap();
        b.append_pax_extensions([
            ("path", &b"pax/name"[..]),
            ("uid", b"4242"),
            ("SCHILY.xattr.user.a", b"1"),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, "short", &b"x"[..]).unwrap();
        let got = members(&b.into_inner().unwrap()).unwrap();
        assert_eq!(
            got,
            vec![
                (PathBuf::from(&long), Some(PathBuf::from(&target)), 0),
                (PathBuf::from("pax/name"), None, 4242),
            ]
        );
    }

    #[test]
    fn header_records_over_the_cap_are_refused_unread() {
        // A PAX header declaring 300 MB, and no data behind it: berth must refuse it on its
        // declared size, before reading (here: before finding the stream too short).
        for kind in [
            tar::EntryType::XHeader,
            tar::EntryType::GNULongName,
            tar::EntryType::GNULongLink,
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_path("././@LongLink").unwrap();
            h.set_size(300_000_000);
            h.set_cksum();
            let e = members(h.as_bytes()).unwrap_err();
            assert!(
                e.to_string()
                    .contains("header of 300000000 bytes, more than the 1048576"),
                "{kind:?}: {e}"
            );
        }
        // At the cap, read.
        let name = vec![b'n'; usize::try_from(MAX_HEADER_RECORD).unwrap()];
        let mut bytes = raw(tar::EntryType::GNULongName, "././@LongLink", &name);
        bytes.extend(raw(tar::EntryType::Regular, "x", b""));
        assert_eq!(members(&bytes).unwrap()[0].0.as_os_str().len(), name.len());
    }

    #[test]
    fn sparse_members_and_disagreeing_sizes_are_refused() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("size", &b"5"[..])]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        b.append_data(&mut h, "liar", &b"x"[..]).unwrap();
        let e = members(&b.into_inner().unwrap()).unwrap_err();
        assert!(e.to_string().contains("PAX size (5)"), "{e}");

        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("GNU.sparse.major", &b"1"[..])])
            .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(0);
        b.append_data(&mut h, "holes", io::empty()).unwrap();
        let e = members(&b.into_inner().unwrap()).unwrap_err();
        assert!(
            e.to_string().contains("entry holes is a sparse file"),
            "{e}"
        );

        let sparse = raw(tar::EntryType::GNUSparse, "gnu-holes", b"");
        let e = members(&sparse).unwrap_err();
        assert!(
            e.to_string().contains("entry gnu-holes is a sparse file"),
            "{e}"
        );
    }

    #[test]
    fn an_extension_header_without_its_member_is_corrupt() {
        let bytes = raw(tar::EntryType::GNULongName, "././@LongLink", b"name\0");
        assert!(matches!(members(&bytes), Err(MemberError::Corrupt(_))));
        let mut twice = bytes.clone();
        twice.extend(bytes);
        let e = members(&twice).unwrap_err();
        assert!(e.to_string().contains("two GNU long name headers"), "{e}");
    }
}
