//! The depmod text index of one kernel: modules.dep (module path → dependency paths),
//! modules.alias (`alias <glob> <module>`) and modules.builtin (paths of modules compiled in).
//!
//! depmod writes each module's *complete* dependency list, ordered so that loading it from last
//! to first works (libkmod prepends while parsing the line; `modprobe --show-depends` shows the
//! resulting order). [`ModuleIndex::load_order`] walks the lists recursively in that order anyway,
//! so a hand-written, non-transitive file still loads correctly, and it refuses cycles.

use super::glob::{fnmatch, normalize_alias};
use super::{KmodError, check_name, normalize_name, read_bounded, shown};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

/// Debian's full generic-kernel modules.alias is about 1.5 MB; 16 MiB is far beyond any kernel.
pub(crate) const MAX_INDEX_FILE: u64 = 16 << 20;
const MAX_LINE: usize = 64 << 10;
const MAX_MODULES: usize = 1 << 16;
const MAX_DEPS: usize = 1 << 10;
const MAX_REL_PATH: usize = 1 << 10;
const MAX_PATTERN: usize = 1 << 10;
/// The file names depmod indexes; compressed ones are decompressed by the kernel.
const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

pub(crate) const DEP_FILE: &str = "modules.dep";
pub(crate) const ALIAS_FILE: &str = "modules.alias";
pub(crate) const BUILTIN_FILE: &str = "modules.builtin";

#[derive(Debug)]
pub(crate) struct Module {
    /// Normalized (`_`) name.
    pub name: String,
    /// Relative to the modules directory, as written in modules.dep.
    pub path: String,
    /// Indices into [`ModuleIndex::modules`], in file order.
    pub deps: Vec<usize>,
}

#[derive(Debug)]
pub(crate) struct Alias {
    /// As written, for regenerating the file (the host's subset).
    #[cfg_attr(not(any(test, feature = "host")), allow(dead_code))]
    pub pattern: String,
    normalized: Vec<u8>,
    /// Normalized module name.
    pub module: String,
}

#[derive(Debug, Default)]
pub(crate) struct ModuleIndex {
    /// In modules.dep order, which depmod takes from modules.order.
    pub modules: Vec<Module>,
    by_name: HashMap<String, usize>,
    pub aliases: Vec<Alias>,
    builtin: BTreeSet<String>,
    /// modules.builtin as read, for copying it unchanged.
    pub builtin_raw: Vec<u8>,
}

impl ModuleIndex {
    /// Read and parse the three index files of a modules directory; all three must exist.
    pub fn read(dir: &Path) -> Result<Self, KmodError> {
        let read = |name: &str| -> Result<(Vec<u8>, String), KmodError> {
            let path = dir.join(name);
            let data = read_bounded(&path, MAX_INDEX_FILE)?;
            Ok((data, path.display().to_string()))
        };
        let (dep, dep_file) = read(DEP_FILE)?;
        let (alias, alias_file) = read(ALIAS_FILE)?;
        let (builtin, builtin_file) = read(BUILTIN_FILE)?;
        let mut index = Self::parse_dep(&dep, &dep_file)?;
        index.aliases = parse_alias(&alias, &alias_file)?;
        index.builtin = parse_builtin(&builtin, &builtin_file)?;
        index.builtin_raw = builtin;
        Ok(index)
    }

    /// An index of modules.dep alone (no aliases, nothing built in).
    pub fn parse_dep(text: &[u8], file: &str) -> Result<Self, KmodError> {
        struct Line<'a> {
            no: usize,
            path: &'a str,
            deps: Vec<&'a str>,
        }
        let mut lines: Vec<Line> = Vec::new();
        let mut index = ModuleIndex::default();
        for item in lines_of(text, file) {
            let (no, line) = item?;
            let err = |reason: String| KmodError::parse(file, no, reason);
            let (path, rest) = line
                .split_once(':')
                .ok_or_else(|| err("missing ':' after the module path".into()))?;
            let path = path.trim_end();
            let name = module_name(path).map_err(&err)?;
            if lines.len() >= MAX_MODULES {
                return Err(err(format!("more than {MAX_MODULES} modules")));
            }
            let deps: Vec<&str> = rest.split_ascii_whitespace().collect();
            if deps.len() > MAX_DEPS {
                return Err(err(format!("more than {MAX_DEPS} dependencies")));
            }
            for dep in &deps {
                module_name(dep).map_err(&err)?;
            }
            if index.by_name.insert(name.clone(), lines.len()).is_some() {
                return Err(err(format!("module {name} appears more than once")));
            }
            index.modules.push(Module {
                name,
                path: path.to_owned(),
                deps: Vec::new(),
            });
            lines.push(Line { no, path, deps });
        }
        let by_path: HashMap<&str, usize> =
            lines.iter().enumerate().map(|(i, l)| (l.path, i)).collect();
        for (i, line) in lines.iter().enumerate() {
            let mut deps = Vec::with_capacity(line.deps.len());
            for dep in &line.deps {
                let Some(&d) = by_path.get(dep) else {
                    return Err(KmodError::parse(
                        file,
                        line.no,
                        format!("dependency {} has no line of its own", shown(dep)),
                    ));
                };
                if d == i {
                    return Err(KmodError::parse(file, line.no, "module depends on itself"));
                }
                if !deps.contains(&d) {
                    deps.push(d);
                }
            }
            index.modules[i].deps = deps;
        }
        // Refuse cycles here, naming the line, rather than at load time in the guest.
        let mut state = HashMap::new();
        for (i, line) in lines.iter().enumerate() {
            let mut sink = Vec::new();
            if let Err(on) = index.walk(i, &mut state, &mut sink) {
                return Err(KmodError::parse(
                    file,
                    line.no,
                    format!("dependency cycle through {}", index.modules[on].name),
                ));
            }
        }
        Ok(index)
    }

    pub fn lookup(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(name)
    }

    /// `idx` and everything it needs, each once, dependencies before their dependents —
    /// the order modprobe inserts them in.
    pub fn load_order(&self, idx: usize) -> Result<Vec<usize>, KmodError> {
        let mut out = Vec::new();
        self.walk(idx, &mut HashMap::new(), &mut out)
            .map_err(|on| KmodError::DependencyCycle {
                name: self.modules[on].name.clone(),
            })?;
        Ok(out)
    }

    /// Iterative post-order walk (no recursion, so a hostile chain cannot exhaust the stack);
    /// `state` is shared across calls so a whole-file check stays linear. Err = a module on a
    /// cycle.
    fn walk(
        &self,
        root: usize,
        state: &mut HashMap<usize, bool>, // false = on the current path, true = done
        out: &mut Vec<usize>,
    ) -> Result<(), usize> {
        if state.contains_key(&root) {
            return Ok(());
        }
        state.insert(root, false);
        let mut stack = vec![(root, 0usize)];
        while let Some((node, next)) = stack.last_mut() {
            let deps = &self.modules[*node].deps;
            if *next < deps.len() {
                // Last to first, as modprobe does.
                let dep = deps[deps.len() - 1 - *next];
                *next += 1;
                match state.get(&dep) {
                    Some(true) => {}
                    Some(false) => return Err(dep),
                    None => {
                        state.insert(dep, false);
                        stack.push((dep, 0));
                    }
                }
            } else {
                let node = *node;
                stack.pop();
                state.insert(node, true);
                out.push(node);
            }
        }
        Ok(())
    }

    /// Names of the modules with an alias matching `modalias`, sorted.
    pub fn modules_for_alias(&self, modalias: &str) -> BTreeSet<&str> {
        let text = normalize_alias(modalias);
        self.aliases
            .iter()
            .filter(|a| fnmatch(&a.normalized, &text))
            .map(|a| a.module.as_str())
            .collect()
    }

    #[cfg(any(test, feature = "host"))]
    /// modules.dep for the modules in `keep` (which must be closed under dependencies), in the
    /// original order and format.
    pub fn render_dep(&self, keep: &BTreeSet<usize>) -> Vec<u8> {
        let mut out = String::new();
        for (i, m) in self.modules.iter().enumerate() {
            if !keep.contains(&i) {
                continue;
            }
            out.push_str(&m.path);
            out.push(':');
            for &d in &m.deps {
                out.push(' ');
                out.push_str(&self.modules[d].path);
            }
            out.push('\n');
        }
        out.into_bytes()
    }

    #[cfg(any(test, feature = "host"))]
    /// modules.alias with only the aliases of modules named in `keep`, in the original order.
    pub fn render_alias(&self, keep: &BTreeSet<&str>) -> Vec<u8> {
        let mut out = String::from("# Aliases extracted from modules themselves.\n");
        for a in self
            .aliases
            .iter()
            .filter(|a| keep.contains(a.module.as_str()))
        {
            out.push_str("alias ");
            out.push_str(&a.pattern);
            out.push(' ');
            out.push_str(&a.module);
            out.push('\n');
        }
        out.into_bytes()
    }
}

pub(crate) fn parse_alias(text: &[u8], file: &str) -> Result<Vec<Alias>, KmodError> {
    let mut aliases = Vec::new();
    for item in lines_of(text, file) {
        let (no, line) = item?;
        let err = |reason: String| KmodError::parse(file, no, reason);
        let mut words = line.split_ascii_whitespace();
        let (pattern, module) = match (words.next(), words.next(), words.next(), words.next()) {
            (Some("alias"), Some(pattern), Some(module), None) => (pattern, module),
            (Some(keyword), ..) if keyword != "alias" => {
                return Err(err(format!("unknown keyword {:?}", shown(keyword))));
            }
            _ => return Err(err("expected 'alias <pattern> <module>'".into())),
        };
        if pattern.len() > MAX_PATTERN {
            return Err(err(format!("pattern longer than {MAX_PATTERN} bytes")));
        }
        if !pattern.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err("pattern is not printable ASCII".into()));
        }
        check_name(module)
            .map_err(|r| err(format!("invalid module name {:?}: {r}", shown(module))))?;
        aliases.push(Alias {
            pattern: pattern.to_owned(),
            normalized: normalize_alias(pattern),
            module: normalize_name(module),
        });
    }
    Ok(aliases)
}

pub(crate) fn parse_builtin(text: &[u8], file: &str) -> Result<BTreeSet<String>, KmodError> {
    let mut names = BTreeSet::new();
    for item in lines_of(text, file) {
        let (no, line) = item?;
        names.insert(module_name(line).map_err(|r| KmodError::parse(file, no, r))?);
    }
    Ok(names)
}

/// Numbered, trimmed, non-blank, non-comment lines, each checked for length and UTF-8.
fn lines_of<'a>(
    text: &'a [u8],
    file: &'a str,
) -> impl Iterator<Item = Result<(usize, &'a str), KmodError>> + 'a {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(move |(i, raw)| {
            let no = i + 1;
            if raw.len() > MAX_LINE {
                return Some(Err(KmodError::parse(
                    file,
                    no,
                    format!("line longer than {MAX_LINE} bytes"),
                )));
            }
            let line = match std::str::from_utf8(raw) {
                Ok(line) => line.trim(),
                Err(_) => return Some(Err(KmodError::parse(file, no, "not valid UTF-8"))),
            };
            (!line.is_empty() && !line.starts_with('#')).then_some(Ok((no, line)))
        })
}

/// The normalized module name of a depmod path, after checking that the path stays inside the
/// modules directory (the host copies from it, the guest loads from it).
fn module_name(path: &str) -> Result<String, String> {
    if path.is_empty() {
        return Err("empty module path".into());
    }
    if path.len() > MAX_REL_PATH {
        return Err(format!("module path longer than {MAX_REL_PATH} bytes"));
    }
    let bad = |why: &str| Err(format!("module path {:?} {why}", shown(path)));
    if path.starts_with('/') {
        return bad("is absolute (expected relative to the modules directory)");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b':' && b != b'\\')
    {
        return bad("has characters other than printable ASCII");
    }
    if path
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return bad("has an empty, '.' or '..' component");
    }
    let base = path.rsplit('/').next().unwrap_or(path);
    let Some(stem) = MODULE_SUFFIXES
        .iter()
        .find_map(|suffix| base.strip_suffix(suffix))
    else {
        return bad("does not end in .ko");
    };
    check_name(stem).map_err(|r| format!("module path {:?}: name {r}", shown(path)))?;
    Ok(normalize_name(stem))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-verity.ko: kernel/drivers/md/dm-bufio.ko kernel/drivers/md/dm-mod.ko
kernel/drivers/md/dm-bufio.ko: kernel/drivers/md/dm-mod.ko
";

    fn names(index: &ModuleIndex, order: &[usize]) -> Vec<String> {
        order
            .iter()
            .map(|&i| index.modules[i].name.clone())
            .collect()
    }

    fn err_of(dep: &str) -> String {
        ModuleIndex::parse_dep(dep.as_bytes(), "modules.dep")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn dep_parses_and_orders_like_modprobe() {
        let index = ModuleIndex::parse_dep(DEP.as_bytes(), "modules.dep").unwrap();
        assert_eq!(index.modules.len(), 6);
        let verity = index.lookup("dm_verity").unwrap();
        assert_eq!(index.modules[verity].path, "kernel/drivers/md/dm-verity.ko");
        assert_eq!(
            names(&index, &index.load_order(verity).unwrap()),
            ["dm_mod", "dm_bufio", "dm_verity"]
        );
        let blk = index.lookup("virtio_blk").unwrap();
        assert_eq!(
            names(&index, &index.load_order(blk).unwrap()),
            ["virtio_ring", "virtio", "virtio_blk"]
        );
        assert!(
            index.lookup("dm-verity").is_none(),
            "lookups take normalized names"
        );
    }

    #[test]
    fn dep_recurses_when_lists_are_not_transitive() {
        let dep = "c.ko: b.ko\nb.ko: a.ko\na.ko:\n";
        let index = ModuleIndex::parse_dep(dep.as_bytes(), "d").unwrap();
        assert_eq!(
            names(&index, &index.load_order(0).unwrap()),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn dep_round_trips_through_render() {
        let index = ModuleIndex::parse_dep(DEP.as_bytes(), "modules.dep").unwrap();
        let all: BTreeSet<usize> = (0..index.modules.len()).collect();
        assert_eq!(String::from_utf8(index.render_dep(&all)).unwrap(), DEP);
    }

    #[test]
    fn dep_hostile_inputs() {
        assert_eq!(
            err_of("a.ko:\nno-colon.ko\n"),
            "modules.dep line 2: missing ':' after the module path"
        );
        assert!(err_of("a.ko: b.ko\n").contains("line 1: dependency b.ko has no line of its own"));
        assert!(err_of("/abs/a.ko:\n").contains("is absolute"));
        assert!(err_of("../a.ko:\n").contains("'..' component"));
        assert!(err_of("x//a.ko:\n").contains("empty"));
        assert!(err_of("a.txt:\n").contains("does not end in .ko"));
        assert!(err_of("bad name!.ko:\n").contains("line 1"));
        assert!(err_of("a.ko:\nb/a.ko:\n").contains("line 2: module a appears more than once"));
        assert!(err_of("a-b.ko:\na_b.ko:\n").contains("appears more than once"));
        assert!(err_of("a.ko: a.ko\n").contains("depends on itself"));
        assert!(err_of("a.ko: b.ko\nb.ko: a.ko\n").contains("line 1: dependency cycle through"));
        let mut huge = String::from("a.ko:");
        while huge.len() <= MAX_LINE {
            huge.push_str(" b.ko");
        }
        assert_eq!(
            err_of(&format!("b.ko:\n{huge}\n")),
            "modules.dep line 2: line longer than 65536 bytes"
        );
        let many = format!("a.ko:{}\n", " b.ko".repeat(MAX_DEPS + 1));
        assert!(err_of(&many).contains("more than 1024 dependencies"));
        let err = ModuleIndex::parse_dep(b"a.ko:\n\xc3\x28.ko:\n", "modules.dep").unwrap_err();
        assert_eq!(err.to_string(), "modules.dep line 2: not valid UTF-8");
        // A long hostile token is shortened in the message.
        let long = format!("{}.txt:\n", "x".repeat(5000));
        assert!(err_of(&long).len() < 300);
    }

    #[test]
    fn dep_long_chain_does_not_recurse() {
        let n = 50_000;
        let mut dep = String::new();
        for i in 0..n {
            if i + 1 < n {
                dep.push_str(&format!("m{i}.ko: m{}.ko\n", i + 1));
            } else {
                dep.push_str(&format!("m{i}.ko:\n"));
            }
        }
        let index = ModuleIndex::parse_dep(dep.as_bytes(), "d").unwrap();
        let order = index.load_order(0).unwrap();
        assert_eq!(order.len(), n);
        assert_eq!(index.modules[order[0]].name, format!("m{}", n - 1));
    }

    #[test]
    fn dep_accepts_compressed_and_blank_lines() {
        let index = ModuleIndex::parse_dep(b"\n# note\nkernel/a-b.ko.xz:\r\n\n", "d").unwrap();
        assert_eq!(index.modules[0].name, "a_b");
        assert_eq!(index.modules[0].path, "kernel/a-b.ko.xz");
    }

    #[test]
    fn alias_parses_matches_and_rejects() {
        let text = b"# Aliases extracted from modules themselves.\n\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
alias virtio:d00000002v* virtio_blk\n\
alias virtio:d0000000[12]v* virtio-any\n\
alias platform:foo-bar foo\n";
        let aliases = parse_alias(text, "modules.alias").unwrap();
        assert_eq!(aliases.len(), 4);
        assert_eq!(aliases[2].module, "virtio_any");
        let index = ModuleIndex {
            aliases,
            ..Default::default()
        };
        let found = index.modules_for_alias("virtio:d00000002v00001AF4");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            ["virtio_any", "virtio_blk"]
        );
        assert!(index.modules_for_alias("virtio:d00000003v1").is_empty());
        // '-' and '_' meet, as in libkmod.
        assert_eq!(index.modules_for_alias("platform:foo_bar").len(), 1);
        let keep = BTreeSet::from(["virtio_blk"]);
        assert_eq!(
            String::from_utf8(index.render_alias(&keep)).unwrap(),
            "# Aliases extracted from modules themselves.\nalias virtio:d00000002v* virtio_blk\n"
        );

        let e = |t: &[u8]| parse_alias(t, "modules.alias").unwrap_err().to_string();
        assert_eq!(
            e(b"alias a\n"),
            "modules.alias line 1: expected 'alias <pattern> <module>'"
        );
        assert_eq!(
            e(b"\nalias a b c\n"),
            "modules.alias line 2: expected 'alias <pattern> <module>'"
        );
        assert_eq!(
            e(b"options a b\n"),
            "modules.alias line 1: unknown keyword \"options\""
        );
        assert!(e(b"alias a b/c\n").contains("invalid module name"));
        assert!(e(b"alias \xff b\n").contains("not valid UTF-8"));
        assert!(e(format!("alias {} b\n", "x".repeat(2000)).as_bytes()).contains("pattern longer"));
    }

    #[test]
    fn builtin_parses_and_rejects() {
        let b = parse_builtin(
            b"kernel/fs/binfmt_script.ko\nkernel/crypto/crc32c-generic.ko\n",
            "b",
        )
        .unwrap();
        assert!(b.contains("binfmt_script") && b.contains("crc32c_generic"));
        let err = parse_builtin(b"kernel/fs/x.ko\nkernel/fs/y\n", "modules.builtin").unwrap_err();
        assert!(
            err.to_string().starts_with("modules.builtin line 2: "),
            "{err}"
        );
    }

    #[test]
    fn read_requires_all_three_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DEP_FILE), DEP).unwrap();
        std::fs::write(
            dir.path().join(ALIAS_FILE),
            "alias virtio:d00000002v* virtio_blk\n",
        )
        .unwrap();
        let err = ModuleIndex::read(dir.path()).unwrap_err();
        assert!(err.to_string().contains("modules.builtin"), "{err}");
        std::fs::write(dir.path().join(BUILTIN_FILE), "kernel/fs/ext4/ext4.ko\n").unwrap();
        let index = ModuleIndex::read(dir.path()).unwrap();
        assert!(index.is_builtin("ext4"));
        assert_eq!(index.aliases.len(), 1);
        assert_eq!(index.builtin_raw, b"kernel/fs/ext4/ext4.ko\n");
    }
}
