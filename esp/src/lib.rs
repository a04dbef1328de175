//! strait-esp: ESP (RFC 4303) security associations and strait's userspace datapath.
