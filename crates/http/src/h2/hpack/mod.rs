//! HPACK header compression (RFC 7541) for gatehouse's HTTP/2 server.
//!
//! - [`decoder`]: request header blocks into [`Field`]s, with the dynamic table the client
//!   fills, strict integer/string/Huffman decoding and the header list size limit.
//! - [`encoder`]: response headers, favouring CPU over bytes (no Huffman) and indexing only
//!   values that repeat across responses.
//! - [`table`]: the static table and the decoder's dynamic table.
//! - [`huffman`]: the Huffman code of Appendix B.
//!
//! Header names are classified once, when a literal is decoded ([`Name`]), and kept that way in
//! the dynamic table: a request that refers to an indexed `user-agent` costs a clone, not a
//! parse.

pub mod decoder;
pub mod encoder;
pub mod huffman;
pub mod table;

pub use decoder::{Decoded, Decoder};
pub use encoder::Encoder;

use bytes::Bytes;
use http::header::HeaderName;

/// Why a header block could not be decoded. Any of these breaks the shared compression state,
/// so the connection ends with COMPRESSION_ERROR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    #[error("header block ends inside a field")]
    Truncated,
    #[error("integer overflows")]
    IntegerOverflow,
    #[error("index 0 or past the end of the table")]
    BadIndex,
    #[error("invalid Huffman code or padding")]
    Huffman,
    #[error("dynamic table size update not at the start of the block, or above the limit")]
    BadSizeUpdate,
}

/// A header field name, classified once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    Method,
    Scheme,
    Authority,
    Path,
    Status,
    Protocol,
    /// A pseudo-header RFC 9113 does not define: the request is malformed.
    UnknownPseudo(Bytes),
    Header(HeaderName),
    /// Not a valid lowercase field name (uppercase, separators, empty): the request is
    /// malformed, but the field still counts for the compression state.
    Invalid(Bytes),
}

impl Name {
    /// Classifies a name as it came off the wire.
    pub fn parse(bytes: &[u8]) -> Name {
        if let Some(pseudo) = bytes.strip_prefix(b":") {
            return match pseudo {
                b"method" => Name::Method,
                b"scheme" => Name::Scheme,
                b"authority" => Name::Authority,
                b"path" => Name::Path,
                b"status" => Name::Status,
                b"protocol" => Name::Protocol,
                _ => Name::UnknownPseudo(Bytes::copy_from_slice(bytes)),
            };
        }
        // RFC 9113 §8.2.1: names are lowercase tokens. HeaderName would accept uppercase (and
        // lowercase it), so check first.
        let valid = !bytes.is_empty() && bytes.iter().all(|&b| is_lower_tchar(b));
        if valid && let Ok(name) = HeaderName::from_bytes(bytes) {
            return Name::Header(name);
        }
        Name::Invalid(Bytes::copy_from_slice(bytes))
    }

    /// The name's length as HPACK counts it (for table and header list sizes).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Method => b":method",
            Name::Scheme => b":scheme",
            Name::Authority => b":authority",
            Name::Path => b":path",
            Name::Status => b":status",
            Name::Protocol => b":protocol",
            Name::UnknownPseudo(b) | Name::Invalid(b) => b,
            Name::Header(h) => h.as_str().as_bytes(),
        }
    }

    pub fn is_pseudo(&self) -> bool {
        !matches!(self, Name::Header(_) | Name::Invalid(_))
    }
}

fn is_lower_tchar(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*'
        | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: Name,
    pub value: Bytes,
}

impl Field {
    /// RFC 7541 §4.1: name and value lengths plus 32 bytes of overhead. The same measure gives
    /// SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 §6.5.2).
    pub fn size(&self) -> usize {
        self.name.len() + self.value.len() + 32
    }
}
