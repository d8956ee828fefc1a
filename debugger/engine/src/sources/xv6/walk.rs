//! Walking the types of every global variable to find the instances of some types (spinlocks,
//! sleeplocks, bufs...) wherever they are: in arrays, nested structs, arrays of structs of
//! arrays. Each instance gets its variable path (`bcache.bucket[4].lock`).
//!
//! Only types that contain something wanted are entered, so a large array of plain data costs
//! nothing; the number of nodes visited is bounded all the same.

use std::collections::{HashMap, HashSet};

use crate::symbols::types::{TypeId, TypeKind, Types};

/// Nodes visited in one walk of all globals before it stops (an xv6 kernel has a few thousand).
pub(super) const MAX_NODES: usize = 1 << 20;
/// Types nest a handful of levels in C; deeper is malformed.
const MAX_DEPTH: usize = 32;

/// One place the walk reached.
pub(super) struct Node<'a> {
    pub path: &'a str,
    pub addr: u64,
    /// Canonical, without typedefs or qualifiers.
    pub ty: TypeId,
    /// For an array node: its innermost element type (canonical) and dimensions.
    pub array: Option<(TypeId, &'a [Option<u64>])>,
}

pub(super) struct Walker<'t> {
    types: &'t Types,
    wanted: HashSet<TypeId>,
    contains: HashMap<TypeId, bool>,
    nodes: usize,
    /// The walk stopped at [`MAX_NODES`].
    pub truncated: bool,
}

impl<'t> Walker<'t> {
    pub fn new(types: &'t Types, wanted: impl IntoIterator<Item = TypeId>) -> Self {
        Walker {
            types,
            wanted: wanted
                .into_iter()
                .map(|t| types.canonical(types.strip(t)))
                .collect(),
            contains: HashMap::new(),
            nodes: 0,
            truncated: false,
        }
    }

    fn key(&self, ty: TypeId) -> TypeId {
        self.types.canonical(self.types.strip(ty))
    }

    /// True when `ty` is wanted or holds a wanted type by value.
    pub fn holds(&mut self, ty: TypeId) -> bool {
        self.holds_depth(self.key(ty), 0)
    }

    fn holds_depth(&mut self, c: TypeId, depth: usize) -> bool {
        if self.wanted.contains(&c) {
            return true;
        }
        if let Some(&v) = self.contains.get(&c) {
            return v;
        }
        if depth > MAX_DEPTH {
            return false;
        }
        self.contains.insert(c, false);
        let types = self.types;
        let v = match &types.get(c).kind {
            TypeKind::Struct(comp) | TypeKind::Union(comp) => comp
                .members
                .iter()
                .any(|m| self.holds_depth(types.canonical(types.strip(m.ty)), depth + 1)),
            TypeKind::Array { element, .. } => {
                self.holds_depth(types.canonical(types.strip(*element)), depth + 1)
            }
            _ => false,
        };
        self.contains.insert(c, v);
        v
    }

    /// Visits every wanted node in every global, and every array node whose elements are
    /// wanted. `visit` returns whether to go inside the node.
    pub fn walk_globals(&mut self, visit: &mut dyn FnMut(&Node<'_>) -> bool) {
        let types = self.types;
        let names = global_paths(types);
        let mut path = String::new();
        for (g, name) in types.globals().iter().zip(names) {
            if !self.holds(g.ty) {
                continue;
            }
            path.clear();
            path.push_str(&name);
            self.walk(g.ty, g.address, &mut path, 0, visit);
            if self.truncated {
                return;
            }
        }
    }

    fn walk(
        &mut self,
        ty: TypeId,
        addr: u64,
        path: &mut String,
        depth: usize,
        visit: &mut dyn FnMut(&Node<'_>) -> bool,
    ) {
        if depth > MAX_DEPTH || self.truncated {
            return;
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            self.truncated = true;
            return;
        }
        let types = self.types;
        let c = self.key(ty);
        if self.wanted.contains(&c) {
            let node = Node {
                path,
                addr,
                ty: c,
                array: None,
            };
            if !visit(&node) {
                return;
            }
        }
        if !self.holds(c) {
            return;
        }
        match &types.get(c).kind {
            TypeKind::Struct(comp) | TypeKind::Union(comp) => {
                for m in &comp.members {
                    let Some(a) = addr.checked_add(m.offset) else {
                        continue;
                    };
                    let len = path.len();
                    if let Some(n) = &m.name {
                        path.push('.');
                        path.push_str(n);
                    }
                    self.walk(m.ty, a, path, depth + 1, visit);
                    path.truncate(len);
                }
            }
            TypeKind::Array { element, count } => {
                let (inner, dims) = types.array_dims(c);
                let inner = types.canonical(types.strip(inner));
                if self.wanted.contains(&inner) {
                    let node = Node {
                        path,
                        addr,
                        ty: c,
                        array: Some((inner, &dims)),
                    };
                    if !visit(&node) {
                        return;
                    }
                }
                let (Some(count), Some(stride)) = (*count, types.size_of(*element)) else {
                    return;
                };
                if stride == 0 {
                    return;
                }
                for i in 0..count {
                    let Some(a) = i.checked_mul(stride).and_then(|o| addr.checked_add(o)) else {
                        return;
                    };
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    self.walk(*element, a, path, depth + 1, visit);
                    path.truncate(len);
                    if self.truncated {
                        return;
                    }
                }
            }
            _ => {}
        }
    }
}

/// A path for each global: its name, qualified only when several globals share it
/// (`counter_fn::counter`, `bio.c:locks`).
pub(super) fn global_paths(types: &Types) -> Vec<String> {
    let mut count: HashMap<&str, usize> = HashMap::new();
    for g in types.globals() {
        *count.entry(&g.name).or_default() += 1;
    }
    types
        .globals()
        .iter()
        .map(|g| {
            if count[g.name.as_str()] == 1 {
                return g.name.clone();
            }
            match &g.function {
                Some(f) => format!("{f}::{}", g.name),
                None => {
                    let unit = g.unit.rsplit('/').next().unwrap_or(&g.unit);
                    format!("{unit}:{}", g.name)
                }
            }
        })
        .collect()
}

/// `bcache.bucket[4].lock` -> `bcache.bucket[*].lock`: the class of instances of one
/// declaration.
pub(super) fn wildcard(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for ch in path.chars() {
        match ch {
            '[' => {
                in_index = true;
                out.push_str("[*]");
            }
            ']' => in_index = false,
            _ if in_index => {}
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::wildcard;

    #[test]
    fn wildcards_indices() {
        assert_eq!(wildcard("bcache.bucket[4].lock"), "bcache.bucket[*].lock");
        assert_eq!(wildcard("grid[1][2].lk"), "grid[*][*].lk");
        assert_eq!(wildcard("tickslock"), "tickslock");
    }
}
