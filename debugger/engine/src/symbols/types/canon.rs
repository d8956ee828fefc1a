//! Structural identity of types across compilation units.
//!
//! Every unit that includes `spinlock.h` has its own `struct spinlock` DIE. Two types are the
//! same when their shapes match all the way down, recursive types included (`struct buf` points
//! at `struct buf`). That is the coarsest partition of the type graph in which equal types have
//! equal local shapes and equal children, which partition refinement computes: start from
//! classes of equal local shape, split by the classes of the children, repeat until stable.

use std::collections::HashMap;

use super::{BaseKind, BitField, Qualifier, Type, TypeId, TypeKind};

/// A type's shape without its children.
#[derive(Hash, PartialEq, Eq)]
enum Shape<'a> {
    Void,
    Base(Option<&'a str>, Option<u64>, BaseKind),
    Pointer(Option<u64>),
    Composite {
        union: bool,
        name: Option<&'a str>,
        size: Option<u64>,
        declaration: bool,
        members: Vec<(Option<&'a str>, u64, Option<BitField>)>,
    },
    Array(Option<u64>),
    Enum(Option<&'a str>, Option<u64>, &'a [(String, i64)]),
    Typedef(Option<&'a str>),
    Qualified(Qualifier),
    Function,
}

fn shape(t: &Type) -> Shape<'_> {
    let name = t.name.as_deref();
    match &t.kind {
        TypeKind::Void => Shape::Void,
        TypeKind::Base(b) => Shape::Base(name, t.size, *b),
        TypeKind::Pointer(_) => Shape::Pointer(t.size),
        TypeKind::Struct(c) | TypeKind::Union(c) => Shape::Composite {
            union: matches!(t.kind, TypeKind::Union(_)),
            name,
            size: t.size,
            declaration: c.declaration,
            members: c
                .members
                .iter()
                .map(|m| (m.name.as_deref(), m.offset, m.bits))
                .collect(),
        },
        TypeKind::Array { count, .. } => Shape::Array(*count),
        TypeKind::Enum(v) => Shape::Enum(name, t.size, v),
        TypeKind::Typedef(_) => Shape::Typedef(name),
        TypeKind::Qualified(q, _) => Shape::Qualified(*q),
        TypeKind::Function => Shape::Function,
    }
}

/// The types a type refers to, in a fixed order; `None` for `void`.
fn children(t: &Type, out: &mut Vec<Option<TypeId>>) {
    out.clear();
    match &t.kind {
        TypeKind::Pointer(p) | TypeKind::Typedef(p) | TypeKind::Qualified(_, p) => out.push(*p),
        TypeKind::Array { element, .. } => out.push(Some(*element)),
        TypeKind::Struct(c) | TypeKind::Union(c) => {
            out.extend(c.members.iter().map(|m| Some(m.ty)))
        }
        _ => {}
    }
}

/// Points every reference to a declaration (`struct cpu;`) at the definition of that tag, when
/// all of the kernel's definitions of the tag agree on their shape.
pub(super) fn resolve_declarations(types: &mut [Type]) {
    let mut groups: HashMap<(bool, &str), Vec<usize>> = HashMap::new();
    for (i, t) in types.iter().enumerate() {
        if let (TypeKind::Struct(c) | TypeKind::Union(c), Some(name)) = (&t.kind, &t.name) {
            if !c.declaration {
                let union = matches!(t.kind, TypeKind::Union(_));
                groups.entry((union, name.as_str())).or_default().push(i);
            }
        }
    }
    let mut target: HashMap<(bool, &str), u32> = HashMap::new();
    for (key, ids) in &groups {
        let first = shape(&types[ids[0]]);
        if ids[1..].iter().all(|&i| shape(&types[i]) == first) {
            target.insert(*key, ids[0] as u32);
        }
    }
    let mut forward: HashMap<u32, u32> = HashMap::new();
    for (i, t) in types.iter().enumerate() {
        if let (TypeKind::Struct(c) | TypeKind::Union(c), Some(name)) = (&t.kind, &t.name) {
            let union = matches!(t.kind, TypeKind::Union(_));
            if c.declaration {
                if let Some(&d) = target.get(&(union, name.as_str())) {
                    forward.insert(i as u32, d);
                }
            }
        }
    }
    if forward.is_empty() {
        return;
    }
    let fwd = |id: &mut TypeId| {
        if let Some(&d) = forward.get(&id.0) {
            *id = TypeId(d);
        }
    };
    for t in types.iter_mut() {
        match &mut t.kind {
            TypeKind::Pointer(Some(p))
            | TypeKind::Typedef(Some(p))
            | TypeKind::Qualified(_, Some(p)) => fwd(p),
            TypeKind::Array { element, .. } => fwd(element),
            TypeKind::Struct(c) | TypeKind::Union(c) => {
                for m in &mut c.members {
                    fwd(&mut m.ty);
                }
            }
            _ => {}
        }
    }
}

/// For each type, the first type structurally equal to it.
pub(super) fn canonicalize(types: &[Type]) -> Vec<TypeId> {
    let n = types.len();
    let mut initial: HashMap<Shape<'_>, u32> = HashMap::new();
    let mut class: Vec<u32> = types
        .iter()
        .map(|t| {
            let next = initial.len() as u32;
            *initial.entry(shape(t)).or_insert(next)
        })
        .collect();
    let mut count = initial.len();
    drop(initial);
    let mut kids = Vec::new();
    // Each round either splits a class or ends; there are at most `n` classes.
    for _ in 0..=n {
        let mut map: HashMap<(u32, Vec<u32>), u32> = HashMap::with_capacity(count);
        let mut next = Vec::with_capacity(n);
        for (i, t) in types.iter().enumerate() {
            children(t, &mut kids);
            let key: Vec<u32> = kids
                .iter()
                .map(|k| {
                    k.and_then(|k| class.get(k.index()).copied())
                        .unwrap_or(u32::MAX)
                })
                .collect();
            let fresh = map.len() as u32;
            next.push(*map.entry((class[i], key)).or_insert(fresh));
        }
        let stable = map.len() == count;
        count = map.len();
        class = next;
        if stable {
            break;
        }
    }
    let mut first: HashMap<u32, u32> = HashMap::with_capacity(count);
    class
        .iter()
        .enumerate()
        .map(|(i, c)| TypeId(*first.entry(*c).or_insert(i as u32)))
        .collect()
}
