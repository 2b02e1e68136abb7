//! The gdb commands of `tools/gdb/` checked against the kernel's own view.
//!
//! `mode=vmstate` (kernel/src/devtools/vmstate.rs) sets up a known VM state (a pager
//! read, a copy-on-write fault, a wired page, a page in limbo, pages paged
//! out to swap and back, one of them clean without its slot), prints the
//! kernel's view of it as `vmstate: <what> key=value ...` lines and stops at
//! `kernel::devtools::vmstate::stop_here`. The host test runs [`commands`] there in
//! one `gdb -batch`, each after an `echo` of [`MARK`], then parses both sides
//! and [`compare`]s them field by field: the same pages with the same bits,
//! the same objects, entries, page-table entries and counts, the same
//! invariant violations; a fail point set from gdb takes effect in the
//! kernel; bad arguments get a clear error.

use std::collections::{BTreeMap, BTreeSet};

/// Printed (with `echo`) before each command's output.
pub const MARK: &str = "@@vm-test ";

/// What a command's output is compared with.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// The kernel's `page name=...` line.
    Page(&'static str),
    /// The kernel's `object name=...` line.
    Object(&'static str),
    /// The `process` and `entry` lines.
    Map,
    /// The `pte va=...` line.
    Pte(u64),
    /// The `phys`, `segment` and `swap` lines.
    Phys,
    /// The `violation` lines.
    Check,
    /// The fail-point listing: `page.alloc` with this action.
    Failpoints(&'static str),
    /// The reply to setting `page.alloc` to `nth:2`.
    FailpointSet,
    /// A clear error containing each of these.
    Error(&'static [&'static str]),
}

const FILE_VA: u64 = 0x4000_0000;
const WIRED_VA: u64 = 0x4010_0000;
const LIMBO_VA: u64 = 0x4020_0000;
const SWAP_VA: u64 = 0x4030_0000;
const PAGE: u64 = 4096;

/// The commands run at the stop, and what each is compared with. Arguments
/// the host cannot know before the kernel runs (object addresses, frame
/// numbers, the pid) come from `kernel::devtools::vmstate::SHOWN`, as gdb
/// expressions.
pub fn commands() -> Vec<(String, Expect)> {
    let shown = |f: &str| format!("kernel::devtools::vmstate::SHOWN.{f}");
    vec![
        (format!("vm page va {FILE_VA:#x}"), Expect::Page("cow")),
        (format!("vm page va {:#x} {}", FILE_VA + PAGE, shown("pid")), Expect::Page("file")),
        (format!("vm page pfn {}", shown("original_pfn")), Expect::Page("original")),
        (format!("vm page va {WIRED_VA:#x}"), Expect::Page("wired")),
        (format!("vm page pfn {}", shown("limbo_pfn")), Expect::Page("limbo")),
        (format!("vm page va {SWAP_VA:#x}"), Expect::Page("swapped")),
        (format!("vm page va {:#x}", SWAP_VA + PAGE), Expect::Page("no_slot")),
        (format!("vm object {}", shown("shadow")), Expect::Object("shadow")),
        (format!("vm object {}", shown("vnode")), Expect::Object("vnode")),
        (format!("vm object {}", shown("wired_object")), Expect::Object("wired")),
        (format!("vm object {}", shown("limbo_object")), Expect::Object("limbo")),
        (format!("vm object {}", shown("swap_object")), Expect::Object("swap")),
        ("vm map".into(), Expect::Map),
        (format!("vm map {}", shown("pid")), Expect::Map),
        (format!("vm pte {FILE_VA:#x}"), Expect::Pte(FILE_VA)),
        (format!("vm pte {:#x} {}", FILE_VA + PAGE, shown("pid")), Expect::Pte(FILE_VA + PAGE)),
        (format!("vm pte {WIRED_VA:#x}"), Expect::Pte(WIRED_VA)),
        (format!("vm pte {LIMBO_VA:#x}"), Expect::Pte(LIMBO_VA)),
        (format!("vm pte {SWAP_VA:#x}"), Expect::Pte(SWAP_VA)),
        ("vm phys".into(), Expect::Phys),
        ("vm check".into(), Expect::Check),
        ("vm failpoint".into(), Expect::Failpoints("off")),
        ("vm failpoint page.alloc nth:2".into(), Expect::FailpointSet),
        ("vm failpoint".into(), Expect::Failpoints("nth:2")),
        ("vm object 0x1234".into(), Expect::Error(&["0x1234", "cannot read a vm::object::VmObject there"])),
        (format!("vm object {}", shown("pid")), Expect::Error(&["cannot read a vm::object::VmObject"])),
        ("vm page pa 0xdead0000000".into(), Expect::Error(&["pa 0xdead0000000", "in no segment of the page array"])),
        ("vm page va 0x50000000".into(), Expect::Error(&["0x50000000 is not mapped in pid"])),
        ("vm map 9999".into(), Expect::Error(&["no process with pid 9999"])),
        ("vm failpoint no.such always".into(), Expect::Error(&["no fail point 'no.such'"])),
        ("vm failpoint page.alloc sometimes".into(), Expect::Error(&["bad action 'sometimes'"])),
    ]
}

pub type Fields = BTreeMap<String, String>;

/// The kernel's `vmstate:` lines, by kind.
#[derive(Debug, Default)]
pub struct KernelView {
    pub process: Fields,
    pub pages: BTreeMap<String, Fields>,
    pub objects: BTreeMap<String, Fields>,
    pub entries: Vec<Fields>,
    pub ptes: BTreeMap<u64, Fields>,
    pub phys: Fields,
    pub segments: Vec<Fields>,
    pub swap: Fields,
    pub violations: Vec<String>,
    /// What the two allocations after the stop did (`ok,failed`).
    pub after_stop: Option<String>,
}

fn fields(words: &str) -> Fields {
    words.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect()
}

/// Parses the kernel's lines out of its console transcript.
pub fn kernel_view(transcript: &str) -> Result<KernelView, String> {
    let mut k = KernelView::default();
    for line in transcript.lines() {
        let Some(rest) = line.strip_prefix("vmstate: ") else { continue };
        let (what, words) = rest.split_once(' ').unwrap_or((rest, ""));
        let f = fields(words);
        let name = || f.get("name").cloned().unwrap_or_default();
        match what {
            "process" => k.process = f,
            "page" => {
                k.pages.insert(name(), f);
            }
            "page.alloc" => k.after_stop = words.rsplit(' ').next().map(String::from),
            "object" => {
                k.objects.insert(name(), f);
            }
            "entry" => k.entries.push(f),
            "pte" => {
                let va = f.get("va").and_then(|v| num(v)).ok_or_else(|| format!("a pte line without va: {line}"))?;
                k.ptes.insert(va, f);
            }
            "phys" => k.phys = f,
            "segment" => k.segments.push(f),
            "swap" => k.swap = f,
            "violation" => k.violations.push(words.to_string()),
            _ => {}
        }
    }
    if k.process.is_empty() || k.pages.is_empty() || k.objects.is_empty() || k.phys.is_empty() {
        return Err("the kernel did not print its view of the scenario".into());
    }
    Ok(k)
}

/// gdb's output cut at each [`MARK`]: (command, its output), in order.
pub fn sections(out: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = Vec::new();
    for line in out.lines() {
        if let Some(cmd) = line.strip_prefix(MARK) {
            v.push((cmd.trim().to_string(), String::new()));
        } else if let Some((_, text)) = v.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    v
}

/// A number as either side prints it: `0x...` in hex, else decimal (a
/// trailing comma or colon ignored).
pub fn num(s: &str) -> Option<u64> {
    let s = s.trim_end_matches([',', ':']);
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The `  key   value` lines of a section (the first word after two spaces).
fn keyed(text: &str) -> Fields {
    text.lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.trim().split_once(char::is_whitespace))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// Collects mismatches: `what: field: kernel X, gdb Y`.
struct Diff<'a> {
    what: String,
    out: &'a mut Vec<String>,
}

impl Diff<'_> {
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, field: &str, kernel: T, gdb: T) {
        if kernel != gdb {
            self.out.push(format!("{}: {field}: kernel {kernel:?}, gdb {gdb:?}", self.what));
        }
    }

    fn num(&mut self, field: &str, kernel: Option<&String>, gdb: Option<&str>) {
        self.eq(field, kernel.and_then(|k| num(k)), gdb.and_then(num));
    }

    fn fail(&mut self, why: String) {
        self.out.push(format!("{}: {why}", self.what));
    }
}

/// Compares every section with the kernel's view; returns the mismatches.
pub fn compare(k: &KernelView, gdb: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let cmds = commands();
    if gdb.len() < cmds.len() {
        out.push(format!("gdb ran {} of the {} commands", gdb.len(), cmds.len()));
    }
    for ((cmd, expect), (ran, text)) in cmds.iter().zip(gdb) {
        let mut d = Diff { what: cmd.clone(), out: &mut out };
        if cmd != ran {
            d.fail(format!("the output is that of {ran:?}"));
            continue;
        }
        match *expect {
            Expect::Page(name) => match k.pages.get(name) {
                Some(f) => page(&mut d, f, text),
                None => d.fail(format!("the kernel printed no page {name}")),
            },
            Expect::Object(name) => match k.objects.get(name) {
                Some(f) => object(&mut d, f, text),
                None => d.fail(format!("the kernel printed no object {name}")),
            },
            Expect::Map => map(&mut d, k, text),
            Expect::Pte(va) => match k.ptes.get(&va) {
                Some(f) => pte(&mut d, f, text),
                None => d.fail(format!("the kernel printed no pte of {va:#x}")),
            },
            Expect::Phys => phys(&mut d, k, text),
            Expect::Check => check(&mut d, &k.violations, text),
            Expect::Failpoints(action) => {
                let line = text.lines().find(|l| l.split_whitespace().next() == Some("page.alloc"));
                d.eq("page.alloc", Some(action), line.and_then(|l| l.split_whitespace().nth(1)));
            }
            Expect::FailpointSet => {
                d.eq("reply", true, text.starts_with("page.alloc: nth:2 ") && text.contains("(was off)"));
            }
            Expect::Error(parts) => {
                for p in parts {
                    if !text.contains(p) {
                        d.fail(format!("the error lacks {p:?}: {text:?}"));
                    }
                }
            }
        }
    }
    out
}

/// `vm page` against `page name=...`.
fn page(d: &mut Diff<'_>, k: &Fields, text: &str) {
    let head = text.lines().next().unwrap_or("");
    let pa = head.split("(pa ").nth(1).and_then(|s| s.split(')').next());
    d.num("pa", k.get("pa"), pa);
    let g = keyed(text);
    let object = g.get("object").map(String::as_str).unwrap_or("?");
    match object {
        "none" => d.eq("object", k["object"].as_str(), "-"),
        _ => {
            let mut w = object.split_whitespace();
            d.num("object", k.get("object"), w.next());
            d.num("pindex", k.get("pindex"), object.rsplit(' ').next());
        }
    }
    // The kind of busy: `exclusive@file:line` / `exclusive, taken at ...`.
    let kind = |s: &str| s.split([',', '@']).next().unwrap_or("").to_string();
    d.eq("busy", kind(&k["busy"]), g.get("busy").map(|s| kind(s)).unwrap_or_default());
    d.num("wire", k.get("wire"), g.get("wired").map(String::as_str));
    d.num("valid", k.get("valid"), g.get("valid").map(String::as_str));
    d.num("dirty", k.get("dirty"), g.get("dirty").map(String::as_str));
    d.eq("queue", k.get("queue").map(String::as_str), g.get("queue").map(String::as_str));
    let set = |s: &str| s.split('|').filter(|f| *f != "-").map(String::from).collect::<BTreeSet<_>>();
    d.eq("flags", set(&k["flags"]), g.get("flags").map(|s| set(s)).unwrap_or_default());
    d.num("mappings", k.get("mappings"), g.get("mappings").map(String::as_str));
    let kernel_pv: BTreeSet<(u64, u64)> = pairs(&k["pv"], '@').into_iter().collect();
    let gdb_pv: BTreeSet<(u64, u64)> = text
        .lines()
        .filter(|l| l.starts_with("    "))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |key: &str| w.iter().position(|x| *x == key).and_then(|i| w.get(i + 1)).and_then(|v| num(v));
            Some((at("pmap")?, at("va")?))
        })
        .collect();
    d.eq("PV entries", kernel_pv, gdb_pv);
}

/// `vm object` against `object name=...`.
fn object(d: &mut Diff<'_>, k: &Fields, text: &str) {
    let head = text.lines().next().unwrap_or("");
    let mut w = head.split_whitespace().skip(1);
    d.num("addr", k.get("addr"), w.next());
    d.eq("kind", k.get("kind").map(String::as_str), w.next());
    let g = keyed(text);
    let first = |key: &str| g.get(key).and_then(|v| v.split_whitespace().next().map(String::from));
    d.num("size", k.get("size"), first("size").as_deref());
    d.num("refs", k.get("refs"), first("refs").as_deref());
    d.num("shadows", k.get("shadows"), first("shadows").as_deref());
    d.num("pip", k.get("pip"), first("pip").as_deref());
    d.eq("flags empty", k["flags"] == "0", g.get("flags").map(String::as_str) == Some("-"));
    match (k["pager"].split_once('@'), g.get("pager").map(String::as_str)) {
        (None, Some("none")) => {}
        (Some((name, addr)), Some(p)) => {
            let mut w = p.split_whitespace();
            d.num("pager address", Some(&addr.to_string()), w.next());
            let ty = w.next().unwrap_or("").to_lowercase();
            if !ty.contains(name) {
                d.fail(format!("pager: the kernel's {name:?} pager is a {ty:?} to gdb"));
            }
        }
        (k, g) => d.fail(format!("pager: kernel {k:?}, gdb {g:?}")),
    }
    // `backing   0xA at offset O ...`
    d.eq("shadow chain", pairs(&k["chain"], '@'), rows(text, "backing", 0, 3));
    // `pindex I  pfn 0xF ...`
    let resident: Vec<(u64, u64)> = rows(text, "pindex", 0, 2).into_iter().map(|(i, pfn)| (i, pfn << 12)).collect();
    d.eq("resident pages", pairs(&k["resident"], ':'), resident);
}

/// A kernel list `a@b,c@d` (or with `:`) as numbers.
fn pairs(list: &str, sep: char) -> Vec<(u64, u64)> {
    list.split(',').filter_map(|e| e.split_once(sep)).filter_map(|(a, b)| Some((num(a)?, num(b)?))).collect()
}

/// The numbers in words `a` and `b` after `word` on each line of `text`
/// that starts with it (indentation aside).
fn rows(text: &str, word: &str, a: usize, b: usize) -> Vec<(u64, u64)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix(word))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Some((num(w.get(a)?)?, num(w.get(b)?)?))
        })
        .collect()
}

/// `vm map` against the `process` and `entry` lines.
fn map(d: &mut Diff<'_>, k: &KernelView, text: &str) {
    let head = text.lines().next().unwrap_or("");
    let words: Vec<&str> = head.split_whitespace().collect();
    let after = |key: &str| words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied();
    d.num("pid", k.process.get("pid"), after("pid"));
    d.num("pmap", k.process.get("pmap"), after("pmap"));
    d.num("pml4", k.process.get("pml4"), after("at"));
    let rows: Vec<Vec<&str>> = text.lines().filter(|l| l.starts_with("  0x")).map(|l| l.split_whitespace().collect()).collect();
    d.eq("entries", k.entries.len(), rows.len());
    for (e, row) in k.entries.iter().zip(&rows) {
        let cols = ["start", "end", "prot", "max", "inherit", "wired", "object", "offset", "cow", "needs_copy"];
        for (i, col) in cols.iter().enumerate() {
            let (kv, gv) = (e[*col].as_str(), row.get(i).copied().unwrap_or(""));
            match (num(kv), num(gv)) {
                (Some(a), Some(b)) => d.eq(&format!("entry {} {col}", e["start"]), a, b),
                _ => d.eq(&format!("entry {} {col}", e["start"]), kv, gv),
            }
        }
    }
}

/// `vm pte` against `pte va=...`.
fn pte(d: &mut Diff<'_>, k: &Fields, text: &str) {
    let kernel: Vec<Option<u64>> = k["entries"].split(',').map(num).collect();
    let gdb: Vec<Option<u64>> = text
        .lines()
        .filter(|l| ["  PML4[", "  PDPT[", "  PD[", "  PT["].iter().any(|p| l.starts_with(p)))
        .map(|l| l.split_whitespace().nth(1).and_then(num))
        .collect();
    d.eq("entries", kernel, gdb);
    let agrees = keyed(text).get("agrees").and_then(|a| a.split_whitespace().next().map(String::from));
    d.eq("agrees", k.get("agrees").cloned(), agrees.map(|a| a.trim_end_matches(':').to_string()));
}

/// `vm phys` against the `phys`, `segment` and `swap` lines.
fn phys(d: &mut Diff<'_>, k: &KernelView, text: &str) {
    let line = |start: &str| text.lines().find(|l| l.starts_with(start)).unwrap_or("");
    let free: Vec<&str> = line("free ").split_whitespace().collect();
    d.num("free", k.phys.get("free"), free.get(1).copied());
    // `... C in the per-CPU caches (of 64 each), Z in the zero pool`
    let ins: Vec<usize> = free.iter().enumerate().filter(|(_, w)| **w == "in").map(|(i, _)| i).collect();
    let word_before = |at: Option<&usize>| at.and_then(|&i| free.get(i.checked_sub(1)?)).copied();
    d.num("cache", k.phys.get("cache"), word_before(ins.first()));
    d.num("zero pool", k.phys.get("zero_pool"), word_before(ins.last()));
    let blocks: Vec<Option<u64>> = k.phys["blocks"].split(',').map(num).collect();
    let gdb_blocks: Vec<Option<u64>> =
        text.lines().filter_map(|l| l.trim().strip_prefix("order ")).map(|l| l.split_whitespace().nth(2).and_then(num)).collect();
    d.eq("blocks per order", blocks, gdb_blocks);
    let segments: Vec<Vec<Option<u64>>> =
        k.segments.iter().map(|s| ["start", "end", "pages", "free"].iter().map(|f| num(&s[*f])).collect()).collect();
    let gdb_segments: Vec<Vec<Option<u64>>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("segment "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let (start, end) = w.get(1).and_then(|r| r.split_once('-')).unwrap_or(("", ""));
            vec![num(start), num(end), w.get(3).and_then(|v| num(v)), w.get(5).and_then(|v| num(v))]
        })
        .collect();
    d.eq("segments (start, end, pages, free)", segments, gdb_segments);
    let queues: Vec<&str> = line("queues ").split_whitespace().collect();
    for q in ["active", "inactive", "laundry"] {
        let g = queues.iter().position(|w| *w == q).and_then(|i| queues.get(i + 1)).copied();
        d.num(q, k.phys.get(q), g);
    }
    let swap: Vec<&str> = line("swap ").split_whitespace().collect();
    d.num("swap pages", k.swap.get("pages"), swap.get(1).copied());
    let used = match (k.swap.get("pages").and_then(|p| num(p)), k.swap.get("avail").and_then(|a| num(a))) {
        (Some(p), Some(a)) => Some((p - a).to_string()),
        _ => None,
    };
    d.num("swap used", used.as_ref(), swap.get(3).copied());
}

/// A violation with every number in decimal: the kernel prints `{:x?}`
/// (bare hex), gdb `0x` hex for addresses and decimal for counts.
pub fn normalise(v: &str, bare_hex: bool) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let n = if bare_hex {
            (!word.is_empty() && word.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
                .then(|| u64::from_str_radix(word, 16).ok())
                .flatten()
        } else {
            num(word).filter(|_| word.starts_with("0x") || word.chars().all(|c| c.is_ascii_digit()))
        };
        match n {
            Some(n) => out.push_str(&n.to_string()),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in v.trim().chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// `vm check` against the `violation` lines.
fn check(d: &mut Diff<'_>, kernel: &[String], text: &str) {
    let k: BTreeSet<String> = kernel.iter().map(|v| normalise(v, true)).collect();
    let g: BTreeSet<String> = text.lines().skip(1).filter(|l| l.starts_with("  ")).map(|l| normalise(l, false)).collect();
    for rule in ["Limbo", "CleanWithoutSlot"] {
        if !k.iter().any(|v| v.starts_with(rule)) {
            d.fail(format!("the kernel's checker found no {rule}: the scenario's broken page is missing"));
        }
    }
    d.eq("violations", k, g);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_normalise_alike() {
        assert_eq!(normalise("Limbo { page: 11a8000 }", true), normalise("  Limbo { page: 0x11a8000 }", false));
        assert_eq!(
            normalise("BadOrder { page: 1000, list: a, order: Some(b) }", true),
            normalise("BadOrder { page: 0x1000, list: 10, order: Some(11) }", false)
        );
        assert_eq!(
            normalise(r#"FreeButInUse { page: 2000, what: "wired" }"#, true),
            normalise(r#"FreeButInUse { page: 0x2000, what: "wired" }"#, false)
        );
        assert_ne!(normalise("Limbo { page: 10 }", true), normalise("Limbo { page: 10 }", false));
    }

    #[test]
    fn a_page_section_is_compared_field_by_field() {
        let k = fields(
            "name=cow va=0x40000000 pa=0x11aa000 object=0xffff818000170900 pindex=0 busy=unbusied wire=0 \
             valid=0xff dirty=0xff queue=Active flags=REFERENCED mappings=1 pv=0xffff818000162f28@0x40000000",
        );
        let text = "page pfn 0x11aa (pa 0x11aa000): record 0xffff818000942a80, index 4266, segment 0
  reached   va 0x40000000 in pid 1 (vmstate)
  object    0xffff818000170900 (Anonymous), pindex 0
  busy      unbusied
  wired     0
  valid     0xff
  dirty     0xff
  queue     Active
  flags     REFERENCED
  mappings  1
    pid 1 (vmstate)  va 0x40000000  pmap 0xffff818000162f28
";
        let mut out = Vec::new();
        page(&mut Diff { what: "p".into(), out: &mut out }, &k, text);
        assert!(out.is_empty(), "{out:?}");
        page(&mut Diff { what: "p".into(), out: &mut out }, &k, &text.replace("wired     0", "wired     1"));
        assert_eq!(out, ["p: wire: kernel Some(0), gdb Some(1)"]);
    }

    #[test]
    fn sections_follow_the_marks() {
        let s = sections("noise\n@@vm-test vm phys\nfree 1\n@@vm-test vm check\nok\n");
        assert_eq!(s, [("vm phys".to_string(), "free 1\n".to_string()), ("vm check".into(), "ok\n".into())]);
    }
}
