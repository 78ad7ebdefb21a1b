//! A process's memory figures from `/proc/<pid>/status` (Linux), for the tests and the
//! load generator that watch the server's resident memory.

use std::collections::HashMap;

/// Every `Name: N kB` line of `/proc/<pid>/status`, in KiB by name (`VmRSS`, `VmHWM`,
/// `RssAnon`, `RssFile`, …).
pub fn kib_fields(pid: u32) -> std::io::Result<HashMap<String, u64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let mut words = rest.split_whitespace();
            let n = words.next()?.parse().ok()?;
            (words.next() == Some("kB")).then(|| (name.to_owned(), n))
        })
        .collect())
}
