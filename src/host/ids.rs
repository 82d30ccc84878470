//! Which host ids a container's ids are: every container runs in a user namespace whose ids
//! 0..size are an unprivileged range of the host's, so a process that escapes the container
//! is nobody on the host — also for a root operator (podman and Docker map nothing by
//! default; berth does).
//!
//! The range comes from the operator's entry in `/etc/subuid` and `/etc/subgid` (the same
//! files rootless tools use), else from berth's default range, and can be given explicitly.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// How many ids a container gets: uid and gid 0..65535, as every image expects.
pub const CONTAINER_IDS: u32 = 65_536;

/// The range a root operator's containers use when `/etc/subuid` has none for root:
/// 0x70000000, above the ranges `useradd` hands out (at most 600,100,000) and
/// systemd-nspawn's (up to 0x6FFFFFFF), below 2^31 (ids some tools read as signed).
pub const DEFAULT_START: u32 = 0x7000_0000;

/// Container ids 0..size are host ids start..start+size, for users and groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IdMap {
    pub uid_start: u32,
    pub gid_start: u32,
    pub size: u32,
}

impl IdMap {
    /// The host uid of container uid `id`, if the container has it.
    pub fn uid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.uid_start + id)
    }

    /// The host gid of container gid `id`, if the container has it.
    pub fn gid(&self, id: u32) -> Option<u32> {
        (id < self.size).then(|| self.gid_start + id)
    }

    /// A name for this mapping in cache paths: trees unpacked for one mapping are owned by
    /// its host ids and cannot serve another.
    pub fn key(&self) -> String {
        format!("u{}-g{}-n{}", self.uid_start, self.gid_start, self.size)
    }

    /// The mapping for the operator `user` (uid `uid`) from the texts of `/etc/subuid` and
    /// `/etc/subgid`: its first range of at least [`CONTAINER_IDS`] ids in each.
    pub fn from_subordinate(subuid: &str, subgid: &str, user: &str, uid: u32) -> Option<IdMap> {
        let uid_start = subordinate_start(subuid, user, uid)?;
        let gid_start = subordinate_start(subgid, user, uid)?;
        Some(IdMap {
            uid_start,
            gid_start,
            size: CONTAINER_IDS,
        })
    }

    /// Berth's own default range (see [`DEFAULT_START`]).
    pub fn default_range() -> IdMap {
        IdMap {
            uid_start: DEFAULT_START,
            gid_start: DEFAULT_START,
            size: CONTAINER_IDS,
        }
    }
}

impl fmt::Display for IdMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.uid_start == self.gid_start {
            write!(f, "{}:{}", self.uid_start, self.size)
        } else {
            write!(f, "{}:{}:{}", self.uid_start, self.gid_start, self.size)
        }
    }
}

/// `START:SIZE` (users and groups alike) or `UIDSTART:GIDSTART:SIZE`.
impl FromStr for IdMap {
    type Err = String;

    fn from_str(s: &str) -> Result<IdMap, String> {
        let bad = || format!("invalid id range {s:?}: use START:SIZE, e.g. 1879048192:65536");
        let parts: Vec<u32> = s
            .split(':')
            .map(|p| p.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let map = match parts[..] {
            [start, size] => IdMap {
                uid_start: start,
                gid_start: start,
                size,
            },
            [uid_start, gid_start, size] => IdMap {
                uid_start,
                gid_start,
                size,
            },
            _ => return Err(bad()),
        };
        let fits = |start: u32| start.checked_add(map.size).is_some();
        if map.size < CONTAINER_IDS || map.uid_start == 0 || map.gid_start == 0 {
            return Err(format!(
                "id range {s:?} must start above 0 and hold at least {CONTAINER_IDS} ids"
            ));
        }
        if !fits(map.uid_start) || !fits(map.gid_start) {
            return Err(format!("id range {s:?} runs past the largest id"));
        }
        Ok(IdMap {
            size: CONTAINER_IDS,
            ..map
        })
    }
}

/// The start of the first `user:start:count` line (by name or uid) with enough ids.
fn subordinate_start(text: &str, user: &str, uid: u32) -> Option<u32> {
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let start: u32 = start.parse().ok()?;
        let count: u32 = count.parse().ok()?;
        let mine = who == user || who == uid;
        (mine && count >= CONTAINER_IDS && start > 0 && start.checked_add(count).is_some())
            .then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_inside_the_range_only() {
        let m = IdMap::default_range();
        assert_eq!(m.uid(0), Some(DEFAULT_START));
        assert_eq!(m.gid(1000), Some(DEFAULT_START + 1000));
        assert_eq!(m.uid(CONTAINER_IDS), None);
    }

    #[test]
    fn subordinate_ranges_by_name_or_uid() {
        let subuid = "alice:100000:65536\nroot:200000:1000\nroot:300000:65536\n";
        let subgid = "1001:400000:70000\n";
        assert_eq!(
            IdMap::from_subordinate(subuid, "root:300000:65536", "root", 0),
            Some(IdMap {
                uid_start: 300_000,
                gid_start: 300_000,
                size: CONTAINER_IDS
            }),
            "the short range is skipped"
        );
        assert_eq!(IdMap::from_subordinate(subuid, subgid, "bob", 1001), None);
        let alice = IdMap::from_subordinate(subuid, subgid, "alice", 1001).unwrap();
        assert_eq!((alice.uid_start, alice.gid_start), (100_000, 400_000));
        assert_eq!(IdMap::from_subordinate("", "", "root", 0), None);
    }

    #[test]
    fn ranges_parse_and_print() {
        let m: IdMap = "1879048192:65536".parse().unwrap();
        assert_eq!(m, IdMap::default_range());
        assert_eq!(m.to_string(), "1879048192:65536");
        let m: IdMap = "100000:200000:65536".parse().unwrap();
        assert_eq!(m.to_string(), "100000:200000:65536");
        for bad in [
            "",
            "1:2:3:4",
            "x:65536",
            "0:65536",
            "100000:10",
            "4294967000:65536",
        ] {
            assert!(bad.parse::<IdMap>().is_err(), "{bad:?}");
        }
    }
}
