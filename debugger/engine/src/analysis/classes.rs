//! A lock's class and its place among the instances of that class: the one rule the rows, the
//! lock order and the check all use.

use crate::model::{index_from_name, index_from_path, LockState};

/// The class of a lock, in lockdep's sense: the locks one piece of code treats alike.
///
/// 1. A class the kernel declared: our kernel names one for every lock; a source that knows a
///    lock only by its name (an xv6 lock found only in the lab's registry) puts the name there.
/// 2. For a lock found at a variable path (an xv6 lock read through DWARF): the name string its
///    `initlock` gave it, without a trailing instance number, so `bcache3` and `bcache12` are one
///    class, as they are one initialisation site (`bcache` itself joins them: a global lock
///    named like its buckets is their parent).
/// 3. The variable path with its indices wildcarded (`bcache.bucket[*].lock`), for a lock with
///    no name.
///
/// No source records initialisation sites yet; when one does, it belongs between 2 and 3.
pub fn lock_class(l: &LockState) -> String {
    let Some(path) = l.path.as_deref() else {
        if !l.meta.class.is_empty() {
            return l.meta.class.clone();
        }
        return name_stem(&l.meta.name).to_string();
    };
    let name = l.meta.name.as_str();
    let named = !name.is_empty() && name != path && !name.starts_with("lock@");
    if named {
        let stem = name_stem(name);
        if !stem.is_empty() {
            return stem.to_string();
        }
    }
    wildcard(path)
}

/// The name without a trailing instance number and the separator before it (`bcache_3` ->
/// `bcache`); the whole name when nothing else would be left.
fn name_stem(name: &str) -> &str {
    let cut = name.trim_end_matches(|c: char| c.is_ascii_digit());
    if cut.len() == name.len() {
        return name;
    }
    let cut = cut.trim_end_matches(['-', '_', '.', ':', '#', ' ']);
    if cut.is_empty() {
        name
    } else {
        cut
    }
}

/// `bcache.bucket[4].lock` -> `bcache.bucket[*].lock`.
fn wildcard(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push_str("[*]");
            }
            ']' => in_index = false,
            _ if !in_index => out.push(c),
            _ => {}
        }
    }
    out
}

/// Where a lock stands among the instances of its class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Instance {
    pub class: String,
    /// Instances with the same shape are elements of one array (`bcache.bucket[*].lock`, or the
    /// name stem `bcache.bucket` for a lock with no path): only they compare by index.
    pub shape: String,
    /// The source's index, else one derived from the path or the name's trailing number.
    pub index: Vec<u32>,
    /// The structure the lock is a field of (`bcache.bucket[4]` for `bcache.bucket[4].lock`),
    /// when it is one: a lock in a structure is the parent of the locks in its members.
    pub container: Option<String>,
}

impl Instance {
    pub fn of(l: &LockState) -> Self {
        let path = l.path.as_deref();
        let index = if !l.index.is_empty() {
            l.index.clone()
        } else {
            match path {
                Some(p) => index_from_path(p),
                None => index_from_name(&l.meta.name),
            }
        };
        Instance {
            class: lock_class(l),
            shape: match path {
                Some(p) => wildcard(p),
                None => name_stem(&l.meta.name).to_string(),
            },
            index,
            container: path.and_then(|p| p.rfind('.').map(|dot| p[..dot].to_string())),
        }
    }

    /// This lock's structure contains `other`'s (strictly).
    pub fn is_parent_of(&self, other: &Instance) -> bool {
        let (Some(a), Some(b)) = (&self.container, &other.container) else {
            return false;
        };
        b.len() > a.len()
            && b.starts_with(a.as_str())
            && matches!(b.as_bytes()[a.len()], b'.' | b'[')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::LockMeta;

    fn lock(name: &str, class: &str, path: Option<&str>) -> LockState {
        LockState {
            meta: LockMeta {
                id: 0,
                name: name.into(),
                class: class.into(),
            },
            path: path.map(Into::into),
            ..Default::default()
        }
    }

    #[test]
    fn our_kernels_declared_class_wins() {
        assert_eq!(
            lock_class(&lock("bcache.bucket4", "bcache.bucket", None)),
            "bcache.bucket"
        );
        assert_eq!(lock_class(&lock("kmem3", "", None)), "kmem");
    }

    #[test]
    fn an_xv6_lock_is_its_name_without_the_instance_number_else_its_path() {
        let p = Some("bcache.bucket[3].lock");
        assert_eq!(
            lock_class(&lock("bcache", "bcache.bucket[*].lock", p)),
            "bcache"
        );
        assert_eq!(lock_class(&lock("bcache_3", "x", p)), "bcache");
        assert_eq!(lock_class(&lock("bcache12", "x", p)), "bcache");
        assert_eq!(
            lock_class(&lock("bcache.bucket[3].lock", "x", p)),
            "bcache.bucket[*].lock",
            "no name: the path"
        );
        assert_eq!(
            lock_class(&lock("lock@0x80001000", "?", p)),
            "bcache.bucket[*].lock"
        );
        assert_eq!(lock_class(&lock("7", "x", p)), "7");
    }

    #[test]
    fn instances_know_their_index_shape_and_parent() {
        let global = Instance::of(&lock("bcache", "", Some("bcache.lock")));
        let b3 = Instance::of(&lock("bcache", "", Some("bcache.bucket[3].lock")));
        let grid = Instance::of(&lock("g", "", Some("grid[1][2].lk")));
        assert_eq!(b3.index, [3]);
        assert_eq!(b3.shape, "bcache.bucket[*].lock");
        assert_eq!(grid.index, [1, 2]);
        assert!(global.is_parent_of(&b3));
        assert!(!b3.is_parent_of(&global));
        assert!(!b3.is_parent_of(&b3));
        let ours = Instance::of(&lock("bcache.bucket4", "bcache.bucket", None));
        assert_eq!(
            (ours.index.as_slice(), ours.shape.as_str()),
            (&[4][..], "bcache.bucket")
        );
        // A prefix that is not a structure boundary is no parent.
        let a = Instance::of(&lock("x", "", Some("kmem.lock")));
        let b = Instance::of(&lock("x", "", Some("kmemx.lock")));
        assert!(!a.is_parent_of(&b));
    }
}
