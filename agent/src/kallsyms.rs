//! `/proc/kallsyms` lines as (address, kind, name), the address as printed (all zeros when
//! the reader may not see addresses).

/// The well-formed entries of a kallsyms listing; other lines are skipped.
pub fn entries(kallsyms: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    kallsyms.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        Some((fields.next()?, fields.next()?, fields.next()?))
    })
}
