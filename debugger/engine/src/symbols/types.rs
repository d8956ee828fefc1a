//! DWARF types and global variables, for reading a C kernel's data structures without knowing
//! their layout in advance (an xv6 kernel's `struct spinlock`, `cpus[]`, `bcache`...).
//!
//! [`Types::load`] reads every compilation unit once (DWARF 2 to 5, through `gimli`) into one
//! arena of [`Type`]s: base types, pointers, typedefs, qualifiers, structs and unions with member
//! offsets (a constant or a DWARF 2 location expression) and bit fields, arrays (each dimension
//! of `int a[2][3]` becomes one nested array), enums and function types. Each unit has its own
//! copy of `struct spinlock`; [`Types::canonical`] maps every copy to one representative, so
//! types compare structurally across units. A declaration (`struct cpu;`) is resolved to the
//! definition of that name when the definitions agree.
//!
//! Every variable with a static address (`DW_OP_addr`) is a [`Global`], file-static and
//! function-static ones included: the xv6 lab's `static struct spinlock *locks[NLOCK]` is a LOCAL
//! symbol and only DWARF says its type.
//!
//! For a pc, [`Types::scope_at`] lists the variables and parameters in scope with their
//! location at that pc (location lists of DWARF 2 `.debug_loc` and DWARF 5 `.debug_loclists`),
//! and [`Types::evaluate`] turns a location into a register, an address or a value given a
//! stopped hart's registers.
//!
//! Nothing here panics on malformed DWARF: it is an error, and every walk is bounded.

mod canon;
#[cfg(test)]
pub(crate) mod cc;
mod load;
mod resolve;
mod scope;
mod units;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

use super::Symbols;

pub use scope::{FrameContext, Place, PlacePiece, Scope, ScopeFrame, ScopedVariable, VarLocation};

/// Strips of typedefs and qualifiers, array nestings and the like never go deeper than this; a
/// longer chain is a cycle in malformed DWARF.
const MAX_CHAIN: usize = 64;

/// Why the DWARF types could not be read.
#[derive(Debug, Error)]
pub enum TypesError {
    #[error("{} has no DWARF debug info (.debug_info): rebuild it with -g", path.display())]
    NoDebugInfo { path: PathBuf },
    #[error("the DWARF debug info of {} is malformed ({reason}); rebuild the kernel", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("the DWARF debug info of {} is malformed ({source}); rebuild the kernel", path.display())]
    Dwarf {
        path: PathBuf,
        #[source]
        source: gimli::Error,
    },
    #[error("cannot evaluate a DWARF location: {0}")]
    Location(String),
}

/// Index of a type in [`Types`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeId(pub(crate) u32);

impl TypeId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// What a base type holds (`DW_AT_encoding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BaseKind {
    Signed,
    Unsigned,
    SignedChar,
    UnsignedChar,
    Bool,
    Float,
    Other,
}

/// `const`, `volatile`, `restrict`, `_Atomic`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Qualifier {
    Const,
    Volatile,
    Restrict,
    Atomic,
}

/// A bit field inside the bytes at [`Member::offset`]: `size` bits starting `shift` bits above
/// the least significant bit of the little-endian word there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BitField {
    pub shift: u32,
    pub size: u32,
}

/// One member of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// `None` for an anonymous struct or union member.
    pub name: Option<String>,
    pub ty: TypeId,
    /// Byte offset in the enclosing struct.
    pub offset: u64,
    pub bits: Option<BitField>,
}

/// The shape of a type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeKind {
    /// `void`, or a type DWARF leaves out.
    Void,
    Base(BaseKind),
    /// `None` points at `void`.
    Pointer(Option<TypeId>),
    Struct(Composite),
    Union(Composite),
    /// One dimension; `count` is `None` for a flexible or variable-length array.
    Array {
        element: TypeId,
        count: Option<u64>,
    },
    Enum(Vec<(String, i64)>),
    Typedef(Option<TypeId>),
    Qualified(Qualifier, Option<TypeId>),
    Function,
}

/// Members of a struct or union.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Composite {
    pub members: Vec<Member>,
    /// A declaration without members (`struct cpu;`) that no definition resolved.
    pub declaration: bool,
}

/// One type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    /// The tag of a struct, union or enum (`spinlock`), or the name of a base type or typedef.
    pub name: Option<String>,
    /// `DW_AT_byte_size`; for arrays, computed from the element.
    pub size: Option<u64>,
    pub kind: TypeKind,
}

/// A variable with a static address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Global {
    pub name: String,
    pub address: u64,
    pub ty: TypeId,
    /// Visible to other units (`DW_AT_external`); false for `static` ones.
    pub external: bool,
    /// The function a function-`static` variable is declared in.
    pub function: Option<String>,
    /// The compilation unit's name (`kernel/spinlock.c`).
    pub unit: String,
}

/// The DWARF types and global variables of one ELF. See the module docs.
pub struct Types {
    path: PathBuf,
    types: Vec<Type>,
    canon: Vec<TypeId>,
    globals: Vec<Global>,
    globals_by_name: HashMap<String, Vec<u32>>,
    scopes: scope::Scopes,
}

impl fmt::Debug for Types {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Types")
            .field("path", &self.path)
            .field("types", &self.types.len())
            .field("globals", &self.globals.len())
            .finish_non_exhaustive()
    }
}

impl Types {
    /// Reads the DWARF of the ELF `symbols` was loaded from.
    pub fn load(symbols: &Symbols) -> Result<Types, TypesError> {
        Self::from_elf(symbols.path(), symbols.elf_bytes())
    }

    /// Reads the DWARF of an ELF image in memory; `path` names it in messages.
    pub fn from_elf(path: impl Into<PathBuf>, elf: &[u8]) -> Result<Types, TypesError> {
        let path = path.into();
        let mut loaded = load::load(&path, elf)?;
        canon::resolve_declarations(&mut loaded.types);
        let canon = canon::canonicalize(&loaded.types);
        let mut globals_by_name: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, g) in loaded.globals.iter().enumerate() {
            globals_by_name
                .entry(g.name.clone())
                .or_default()
                .push(i as u32);
        }
        Ok(Types {
            path,
            types: loaded.types,
            canon,
            globals: loaded.globals,
            globals_by_name,
            scopes: loaded.scopes,
        })
    }

    /// The ELF these types come from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Number of types in the arena (every unit's copies).
    pub fn len(&self) -> usize {
        self.types.len()
    }

    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// The type with this id. Ids come from this `Types`; a foreign id gives `void`.
    pub fn get(&self, id: TypeId) -> &Type {
        static VOID: Type = Type {
            name: None,
            size: None,
            kind: TypeKind::Void,
        };
        self.types.get(id.index()).unwrap_or(&VOID)
    }

    /// Every type id, each unit's copies included.
    pub fn ids(&self) -> impl Iterator<Item = TypeId> + '_ {
        (0..self.types.len() as u32).map(TypeId)
    }

    /// The representative of every type structurally equal to `id` (across units).
    pub fn canonical(&self, id: TypeId) -> TypeId {
        self.canon.get(id.index()).copied().unwrap_or(id)
    }

    /// `id` without typedefs and qualifiers.
    pub fn strip(&self, id: TypeId) -> TypeId {
        let mut id = id;
        for _ in 0..MAX_CHAIN {
            match self.get(id).kind {
                TypeKind::Typedef(Some(t)) | TypeKind::Qualified(_, Some(t)) => id = t,
                _ => return id,
            }
        }
        id
    }

    /// True when `a` and `b` are the same type once typedefs and qualifiers are stripped,
    /// wherever they were declared.
    pub fn same(&self, a: TypeId, b: TypeId) -> bool {
        self.canonical(self.strip(a)) == self.canonical(self.strip(b))
    }

    /// Size in bytes, through typedefs and qualifiers; `None` for `void`, functions and arrays
    /// without a bound.
    pub fn size_of(&self, id: TypeId) -> Option<u64> {
        let t = self.get(self.strip(id));
        match t.kind {
            TypeKind::Void | TypeKind::Function => None,
            _ => t.size,
        }
    }

    /// The members of a struct or union (through typedefs), else none.
    pub fn members(&self, id: TypeId) -> &[Member] {
        match &self.get(self.strip(id)).kind {
            TypeKind::Struct(c) | TypeKind::Union(c) => &c.members,
            _ => &[],
        }
    }

    /// The member called `name` of a struct or union, looking into anonymous members; the
    /// returned member's offset is from the start of `id`.
    pub fn member(&self, id: TypeId, name: &str) -> Option<Member> {
        self.member_in(id, name, 0)
    }

    fn member_in(&self, id: TypeId, name: &str, depth: usize) -> Option<Member> {
        if depth > 8 {
            return None;
        }
        for m in self.members(id) {
            match &m.name {
                Some(n) if n == name => return Some(m.clone()),
                None => {
                    if let Some(mut inner) = self.member_in(m.ty, name, depth + 1) {
                        inner.offset = inner.offset.checked_add(m.offset)?;
                        return Some(inner);
                    }
                }
                _ => {}
            }
        }
        None
    }

    /// True for a struct (not a union), through typedefs.
    pub fn is_struct(&self, id: TypeId) -> bool {
        matches!(self.get(self.strip(id)).kind, TypeKind::Struct(_))
    }

    /// What a pointer points at, through typedefs: `Some(None)` for `void *`, `None` when `id`
    /// is not a pointer.
    pub fn pointee(&self, id: TypeId) -> Option<Option<TypeId>> {
        match self.get(self.strip(id)).kind {
            TypeKind::Pointer(t) => Some(t),
            _ => None,
        }
    }

    /// Element type and count of an array, through typedefs.
    pub fn array(&self, id: TypeId) -> Option<(TypeId, Option<u64>)> {
        match self.get(self.strip(id)).kind {
            TypeKind::Array { element, count } => Some((element, count)),
            _ => None,
        }
    }

    /// The innermost element of a (possibly multi-dimensional) array and its dimensions,
    /// outermost first; `(id, [])` for a non-array.
    pub fn array_dims(&self, id: TypeId) -> (TypeId, Vec<Option<u64>>) {
        let mut dims = Vec::new();
        let mut id = id;
        while let Some((element, count)) = self.array(id) {
            if dims.len() >= MAX_CHAIN {
                break;
            }
            dims.push(count);
            id = element;
        }
        (id, dims)
    }

    /// True for an integer (or char, bool, enum) type, through typedefs; with its signedness.
    pub fn integer(&self, id: TypeId) -> Option<bool> {
        match self.get(self.strip(id)).kind {
            TypeKind::Base(BaseKind::Signed | BaseKind::SignedChar) => Some(true),
            TypeKind::Base(BaseKind::Unsigned | BaseKind::UnsignedChar | BaseKind::Bool) => {
                Some(false)
            }
            TypeKind::Enum(_) => Some(false),
            _ => None,
        }
    }

    /// True for `char`, `signed char` and `unsigned char` (a `char *` may be a string).
    pub fn is_char(&self, id: TypeId) -> bool {
        matches!(
            self.get(self.strip(id)).kind,
            TypeKind::Base(BaseKind::SignedChar | BaseKind::UnsignedChar)
        ) && self.size_of(id) == Some(1)
    }

    /// The enumerator whose value is `v`, for an enum type (through typedefs).
    pub fn enumerator(&self, id: TypeId, v: i64) -> Option<&str> {
        match &self.get(self.strip(id)).kind {
            TypeKind::Enum(values) => values
                .iter()
                .find(|(_, x)| *x == v)
                .map(|(n, _)| n.as_str()),
            _ => None,
        }
    }

    /// Distinct (canonical) structs with this tag, complete ones only.
    pub fn structs_named(&self, tag: &str) -> Vec<TypeId> {
        let mut out: Vec<TypeId> = self
            .ids()
            .filter(|&id| {
                let t = self.get(id);
                t.name.as_deref() == Some(tag)
                    && matches!(&t.kind, TypeKind::Struct(c) if !c.declaration)
            })
            .map(|id| self.canonical(id))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Distinct (canonical) complete structs, in arena order.
    pub fn structs(&self) -> Vec<TypeId> {
        let mut seen = std::collections::HashSet::new();
        self.ids()
            .filter(|&id| matches!(&self.get(id).kind, TypeKind::Struct(c) if !c.declaration))
            .map(|id| self.canonical(id))
            .filter(|id| seen.insert(*id))
            .collect()
    }

    /// Every variable with a static address, in DWARF order.
    pub fn globals(&self) -> &[Global] {
        &self.globals
    }

    /// A global by name: the external one if there is one, else the only static one; `None`
    /// when absent or when several static variables share the name.
    pub fn global(&self, name: &str) -> Option<&Global> {
        let all = self.globals_by_name.get(name)?;
        let all: Vec<&Global> = all.iter().map(|&i| &self.globals[i as usize]).collect();
        if let Some(g) = all.iter().find(|g| g.external && g.function.is_none()) {
            return Some(g);
        }
        match all.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }

    /// Every global with this name (several units may each have a `static` one).
    pub fn globals_named<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Global> + 'a {
        self.globals_by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|&i| &self.globals[i as usize])
    }

    /// The C spelling of a type: `struct spinlock *`, `uint`, `struct buf [30]`.
    pub fn display(&self, id: TypeId) -> String {
        self.display_depth(id, 0)
    }

    fn display_depth(&self, id: TypeId, depth: usize) -> String {
        if depth > MAX_CHAIN {
            return "...".into();
        }
        let t = self.get(id);
        let named = |prefix: &str| match &t.name {
            Some(n) => format!("{prefix}{n}"),
            None => format!("{prefix}<anonymous>"),
        };
        match &t.kind {
            TypeKind::Void => "void".into(),
            TypeKind::Base(_) | TypeKind::Typedef(_) => named(""),
            TypeKind::Struct(_) => named("struct "),
            TypeKind::Union(_) => named("union "),
            TypeKind::Enum(_) => named("enum "),
            TypeKind::Function => "function".into(),
            TypeKind::Pointer(None) => "void *".into(),
            TypeKind::Pointer(Some(p)) => format!("{} *", self.display_depth(*p, depth + 1)),
            TypeKind::Qualified(q, inner) => {
                let q = match q {
                    Qualifier::Const => "const",
                    Qualifier::Volatile => "volatile",
                    Qualifier::Restrict => "restrict",
                    Qualifier::Atomic => "_Atomic",
                };
                match inner {
                    Some(i) => format!("{q} {}", self.display_depth(*i, depth + 1)),
                    None => format!("{q} void"),
                }
            }
            TypeKind::Array { element, count } => {
                let c = count.map(|c| c.to_string()).unwrap_or_default();
                format!("{} [{c}]", self.display_depth(*element, depth + 1))
            }
        }
    }

    /// Reads an integer member or value of type `id` from `bytes` (little-endian), honouring
    /// bit fields; `None` when the bytes are too short or the type is not an integer,
    /// pointer or enum of at most 8 bytes. Signed values are sign-extended into the `i64`.
    pub fn read_int(&self, id: TypeId, bits: Option<BitField>, bytes: &[u8]) -> Option<i64> {
        let signed = match self.pointee(id) {
            Some(_) => false,
            None => self.integer(id)?,
        };
        let size = usize::try_from(self.size_of(id)?).ok()?;
        if size == 0 || size > 8 {
            return None;
        }
        let (width_bits, shift, read_len) = match bits {
            None => (size as u32 * 8, 0, size),
            Some(b) => {
                let span = (b.shift + b.size).div_ceil(8) as usize;
                if b.size == 0 || b.shift + b.size > 64 {
                    return None;
                }
                (b.size, b.shift, span)
            }
        };
        let raw = bytes.get(..read_len)?;
        let mut word = [0u8; 8];
        word[..read_len].copy_from_slice(raw);
        let mut v = u64::from_le_bytes(word) >> shift;
        if width_bits < 64 {
            v &= (1u64 << width_bits) - 1;
            if signed && (v >> (width_bits - 1)) & 1 == 1 {
                v |= !0u64 << width_bits;
            }
        }
        Some(v as i64)
    }

    /// The variables and parameters in scope at `pc`, innermost scope first, with their
    /// locations at `pc`. See [`Scope`].
    pub fn scope_at(&self, pc: u64) -> Result<Scope, TypesError> {
        self.scopes.scope_at(self, pc)
    }

    /// Where a variable is at this moment, given the hart's registers and memory.
    pub fn evaluate(
        &self,
        location: &VarLocation,
        frame_base: Option<&VarLocation>,
        ctx: &mut dyn FrameContext,
    ) -> Result<Place, TypesError> {
        scope::evaluate(location, frame_base, ctx)
    }

    pub(crate) fn error(&self, source: gimli::Error) -> TypesError {
        TypesError::Dwarf {
            path: self.path.clone(),
            source,
        }
    }
}

#[cfg(test)]
mod tests;
