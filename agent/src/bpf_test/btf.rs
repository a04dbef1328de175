//! A small reader of the BTF in an eBPF ELF object: struct layouts, enum values,
//! the variables of a data section and function names, which is what the ABI tests
//! compare with the Rust mirrors. No root needed; it only parses bytes.
//!
//! aya-obj parses BTF too but keeps struct members and enum values private. This
//! reads the type section as the kernel documents it (Documentation/bpf/btf.rst): a
//! header, then each type as `{name_off, info, size_or_type}` followed by what its
//! kind carries. Only a little-endian object (what clang's `-target bpf` makes on
//! x86_64 and aarch64) is read.

use std::collections::HashMap;

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// A struct member as the object lays it out (bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// A struct's size and its members in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StructLayout {
    pub size: usize,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: String,
    /// `size` for ints, structs, unions, enums, datasecs; the referred type id for
    /// pointers, typedefs, qualifiers, vars and funcs.
    size_or_type: u32,
    /// Struct and union members: (name, type id, offset in bits).
    members: Vec<(String, u32, u32)>,
    /// Enum values.
    values: Vec<(String, i64)>,
    /// Array: (element type id, element count).
    array: Option<(u32, u32)>,
    /// Datasec: the type ids of its variables.
    vars: Vec<u32>,
}

/// The parsed types of one object, by id (id 0 is `void`).
pub struct Btf {
    types: Vec<Type>,
    by_name: HashMap<(u32, String), u32>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, String> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or_else(|| format!("truncated at {off}"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| format!("truncated at {off}"))
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, String> {
    Ok(u64::from(u32_at(b, off)?) | (u64::from(u32_at(b, off + 4)?) << 32))
}

fn usize_at(b: &[u8], off: usize) -> Result<usize, String> {
    usize::try_from(u64_at(b, off)?).map_err(|e| e.to_string())
}

fn cstr(b: &[u8], off: usize) -> Result<String, String> {
    let rest = b
        .get(off..)
        .ok_or_else(|| format!("string at {off} out of range"))?;
    let end = rest
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| format!("unterminated string at {off}"))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The contents of the ELF64 section `name`.
fn elf_section<'a>(elf: &'a [u8], name: &str) -> Result<&'a [u8], String> {
    if elf.get(..4) != Some(b"\x7fELF".as_slice()) || elf.get(4) != Some(&2) {
        return Err("not an ELF64 object".into());
    }
    if elf.get(5) != Some(&1) {
        return Err("not a little-endian object".into());
    }
    let shoff = usize_at(elf, 0x28)?;
    let shentsize = usize::from(u16_at(elf, 0x3a)?);
    let shnum = usize::from(u16_at(elf, 0x3c)?);
    let shstrndx = usize::from(u16_at(elf, 0x3e)?);
    let header = |i: usize| -> Result<(u32, usize, usize), String> {
        let h = shoff + i * shentsize;
        Ok((
            u32_at(elf, h)?,
            usize_at(elf, h + 24)?,
            usize_at(elf, h + 32)?,
        ))
    };
    let (_, strtab, _) = header(shstrndx)?;
    for i in 0..shnum {
        let (name_off, off, size) = header(i)?;
        if cstr(elf, strtab + name_off as usize)? == name {
            return elf
                .get(off..off + size)
                .ok_or_else(|| format!("section {name} out of range"));
        }
    }
    Err(format!("no section {name}"))
}

impl Btf {
    /// Parses the `.BTF` section of an ELF object (clang keeps it with `-g`).
    pub fn from_elf(elf: &[u8]) -> Result<Self, String> {
        Self::parse(elf_section(elf, ".BTF")?)
    }

    fn parse(b: &[u8]) -> Result<Self, String> {
        if u16_at(b, 0)? != BTF_MAGIC {
            return Err("bad BTF magic".into());
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = hdr_len + u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = hdr_len + u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let strings = b
            .get(str_off..str_off + str_len)
            .ok_or("string section out of range")?;
        let name = |off: u32| cstr(strings, off as usize);

        let mut types = vec![Type {
            kind: 0,
            name: "void".into(),
            size_or_type: 0,
            members: vec![],
            values: vec![],
            array: None,
            vars: vec![],
        }];
        let mut at = type_off;
        let end = type_off + type_len;
        while at < end {
            let info = u32_at(b, at + 4)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let bitfields = info >> 31 == 1;
            let mut t = Type {
                kind,
                name: name(u32_at(b, at)?)?,
                size_or_type: u32_at(b, at + 8)?,
                members: vec![],
                values: vec![],
                array: None,
                vars: vec![],
            };
            at += 12;
            match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => at += 4,
                KIND_ARRAY => {
                    t.array = Some((u32_at(b, at)?, u32_at(b, at + 8)?));
                    at += 12;
                }
                KIND_STRUCT | KIND_UNION => {
                    for _ in 0..vlen {
                        let offset = u32_at(b, at + 8)?;
                        // With bitfields the high 8 bits are a member's bit size.
                        let offset = if bitfields {
                            offset & 0xff_ffff
                        } else {
                            offset
                        };
                        t.members
                            .push((name(u32_at(b, at)?)?, u32_at(b, at + 4)?, offset));
                        at += 12;
                    }
                }
                KIND_ENUM => {
                    for _ in 0..vlen {
                        let value = u32_at(b, at + 4)?;
                        // The kind flag says signed; the values here are small either way.
                        let value = if bitfields {
                            i64::from(value as i32)
                        } else {
                            i64::from(value)
                        };
                        t.values.push((name(u32_at(b, at)?)?, value));
                        at += 8;
                    }
                }
                KIND_ENUM64 => {
                    for _ in 0..vlen {
                        let value =
                            u64::from(u32_at(b, at + 4)?) | (u64::from(u32_at(b, at + 8)?) << 32);
                        t.values.push((name(u32_at(b, at)?)?, value as i64));
                        at += 12;
                    }
                }
                KIND_FUNC_PROTO => at += 8 * vlen,
                KIND_DATASEC => {
                    for _ in 0..vlen {
                        t.vars.push(u32_at(b, at)?);
                        at += 12;
                    }
                }
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => {}
                other => return Err(format!("unknown BTF kind {other}")),
            }
            types.push(t);
        }
        let by_name = types
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.name.is_empty())
            .map(|(id, t)| ((t.kind, t.name.clone()), id as u32))
            .collect();
        Ok(Self { types, by_name })
    }

    fn get(&self, id: u32) -> Result<&Type, String> {
        self.types
            .get(id as usize)
            .ok_or_else(|| format!("no BTF type {id}"))
    }

    fn named(&self, kind: u32, name: &str) -> Result<&Type, String> {
        let id = self
            .by_name
            .get(&(kind, name.to_string()))
            .ok_or_else(|| format!("no type {name} of BTF kind {kind} in the object"))?;
        self.get(*id)
    }

    /// The size in bytes of type `id`, through typedefs and qualifiers.
    fn size_of(&self, id: u32) -> Result<usize, String> {
        let t = self.get(id)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                Ok(t.size_or_type as usize)
            }
            KIND_PTR => Ok(8),
            KIND_ARRAY => {
                let (elem, n) = t.array.expect("arrays carry their element");
                Ok(self.size_of(elem)? * n as usize)
            }
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.size_of(t.size_or_type)
            }
            other => Err(format!("BTF type {id} (kind {other}) has no size")),
        }
    }

    /// `struct <name>`: its size and each member's byte offset and size.
    pub fn struct_layout(&self, name: &str) -> Result<StructLayout, String> {
        let t = self.named(KIND_STRUCT, name)?;
        let members = t
            .members
            .iter()
            .map(|(member, ty, bits)| {
                if bits % 8 != 0 {
                    return Err(format!("{name}.{member} is a bitfield"));
                }
                Ok(Member {
                    name: member.clone(),
                    offset: (bits / 8) as usize,
                    size: self.size_of(*ty)?,
                })
            })
            .collect::<Result<_, String>>()?;
        Ok(StructLayout {
            size: t.size_or_type as usize,
            members,
        })
    }

    /// `enum <name>`: its constants and values in declaration order.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i64)>, String> {
        self.named(KIND_ENUM, name)
            .or_else(|_| self.named(KIND_ENUM64, name))
            .map(|t| t.values.clone())
    }

    /// The names of the variables in data section `name` (`.maps`: the maps).
    pub fn datasec_vars(&self, name: &str) -> Result<Vec<String>, String> {
        self.named(KIND_DATASEC, name)?
            .vars
            .iter()
            .map(|id| self.get(*id).map(|v| v.name.clone()))
            .collect()
    }

    /// Whether the object has a function (a program, or a subprogram) `name`.
    pub fn has_func(&self, name: &str) -> bool {
        self.named(KIND_FUNC, name).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_an_elf_object_with_btf() {
        assert!(Btf::from_elf(b"not an object").is_err());
        let mut elf = strait_ebpf::FASTPATH.to_vec();
        elf[5] = 2; // big-endian
        assert!(Btf::from_elf(&elf).is_err());
    }
}
