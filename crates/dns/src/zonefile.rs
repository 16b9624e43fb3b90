//! RFC 1035 zone files (section 5) into records, with every error naming file:line.
//!
//! The file is split into entries here (comments, quoting, parentheses spanning lines, `$ORIGIN`,
//! `$TTL`, owner and TTL inheritance), so each entry knows the line it started on; the RDATA of
//! each entry is parsed by hickory-proto's zone parser, which knows every record type's text
//! form. hickory's own whole-file parser reports errors without a line number, so it only ever
//! sees one record at a time.

use hickory_proto::rr::{Name, RData, RecordType};
use hickory_proto::serialize::txt::{Parser, parse_ttl};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// Record types a zone file may hold. The answer logic knows the semantics of each: DNAME (for
/// one) would need rewriting that is not built, so it is refused rather than served wrongly.
const SUPPORTED: &[RecordType] = &[
    RecordType::SOA,
    RecordType::NS,
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::MX,
    RecordType::TXT,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::CAA,
    RecordType::HINFO,
    RecordType::NAPTR,
    RecordType::SSHFP,
    RecordType::TLSA,
    RecordType::SVCB,
    RecordType::HTTPS,
];

/// A zone file error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFileError {
    pub file: String,
    /// 1-based; 0 when the error concerns the whole file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ZoneFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

impl std::error::Error for ZoneFileError {}

/// One record as read from a file.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub line: usize,
    pub name: Name,
    pub ttl: u32,
    pub rdata: RData,
}

/// Reads and parses a zone file.
pub fn read(path: &Path) -> Result<Vec<FileRecord>, ZoneFileError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ZoneFileError {
        file: file.clone(),
        line: 0,
        message: format!("cannot read the zone file: {e}"),
    })?;
    parse(&text, &file)
}

/// Parses zone file text; `file` is used in errors.
pub fn parse(text: &str, file: &str) -> Result<Vec<FileRecord>, ZoneFileError> {
    let err = |line: usize, message: String| ZoneFileError {
        file: file.to_string(),
        line,
        message,
    };
    let entries = split(text).map_err(|(line, m)| err(line, m))?;
    let mut origin: Option<Name> = None;
    let mut default_ttl: Option<u32> = None;
    let mut last_ttl: Option<u32> = None;
    let mut last_owner: Option<Name> = None;
    let mut records = Vec::new();
    for entry in entries {
        let line = entry.line;
        let mut tokens = entry.tokens.iter().map(|t| t.text.as_str());
        if !entry.blank_owner && entry.tokens[0].text.starts_with('$') {
            let directive = tokens.next().unwrap_or_default().to_ascii_uppercase();
            let arg = tokens.next();
            match (directive.as_str(), arg) {
                ("$ORIGIN", Some(name)) => {
                    let name = Name::parse(name, origin.as_ref())
                        .map_err(|e| err(line, format!("bad $ORIGIN {name:?}: {e}")))?;
                    if !name.is_fqdn() {
                        return Err(err(
                            line,
                            "$ORIGIN must be an absolute name (end it with '.')".into(),
                        ));
                    }
                    origin = Some(name);
                }
                ("$TTL", Some(ttl)) => {
                    default_ttl = Some(
                        parse_ttl(ttl).map_err(|e| err(line, format!("bad $TTL {ttl:?}: {e}")))?,
                    );
                }
                ("$ORIGIN" | "$TTL", None) => {
                    return Err(err(line, format!("{directive} needs a value")));
                }
                _ => {
                    return Err(err(
                        line,
                        format!("unsupported directive {directive} (supported: $ORIGIN, $TTL)"),
                    ));
                }
            }
            if let Some(extra) = tokens.next() {
                return Err(err(line, format!("unexpected {extra:?} after {directive}")));
            }
            continue;
        }

        let owner = if entry.blank_owner {
            last_owner
                .clone()
                .ok_or_else(|| err(line, "the first record has no owner name".into()))?
        } else {
            let text = tokens.next().unwrap_or_default();
            let name = if text == "@" {
                origin.clone().ok_or_else(|| {
                    err(
                        line,
                        "'@' used before any $ORIGIN: add an $ORIGIN line".into(),
                    )
                })?
            } else {
                Name::parse(text, origin.as_ref())
                    .map_err(|e| err(line, format!("bad owner name {text:?}: {e}")))?
            };
            if !name.is_fqdn() {
                return Err(err(
                    line,
                    format!(
                        "relative owner name {text:?} with no $ORIGIN: add an $ORIGIN line or end the name with '.'"
                    ),
                ));
            }
            name
        };
        last_owner = Some(owner.clone());

        // [TTL] [class] type, TTL and class in either order.
        let mut ttl = None;
        let rtype = loop {
            let Some(token) = tokens.next() else {
                return Err(err(line, "missing record type".into()));
            };
            if ttl.is_none() && token.starts_with(|c: char| c.is_ascii_digit()) {
                ttl = Some(
                    parse_ttl(token).map_err(|e| err(line, format!("bad TTL {token:?}: {e}")))?,
                );
                continue;
            }
            let upper = token.to_ascii_uppercase();
            match upper.as_str() {
                "IN" => continue,
                "CH" | "HS" | "CS" | "NONE" | "ANY" => {
                    return Err(err(line, format!("class {upper} is not served: only IN")));
                }
                _ => {}
            }
            match RecordType::from_str(&upper) {
                Ok(t) if SUPPORTED.contains(&t) => break t,
                _ => {
                    let names: Vec<String> = SUPPORTED.iter().map(|t| t.to_string()).collect();
                    return Err(err(
                        line,
                        format!(
                            "unsupported record type {token:?} (supported: {})",
                            names.join(", ")
                        ),
                    ));
                }
            }
        };
        // RFC 1035 falls back to the last explicit TTL; RFC 2308's $TTL, when given, wins.
        let ttl = match ttl {
            Some(t) => {
                last_ttl = Some(t);
                t
            }
            None => default_ttl.or(last_ttl).ok_or_else(|| {
                err(
                    line,
                    "no TTL: give the record a TTL or add a $TTL line".into(),
                )
            })?,
        };
        let rdata: Vec<&str> = tokens.collect();
        if rdata.is_empty() {
            return Err(err(line, format!("{rtype} record without data")));
        }
        let rdata = parse_rdata(&owner, rtype, &rdata, origin.as_ref())
            .map_err(|m| err(line, format!("bad {rtype} data: {m}")))?;
        records.push(FileRecord {
            line,
            name: owner,
            ttl,
            rdata,
        });
    }
    Ok(records)
}

/// Parses one record's RDATA with hickory's zone parser (relative names against `origin`).
fn parse_rdata(
    owner: &Name,
    rtype: RecordType,
    rdata: &[&str],
    origin: Option<&Name>,
) -> Result<RData, String> {
    // The owner is written as "@" with the owner as the parser's origin... except relative
    // RDATA names must resolve against the file's $ORIGIN, so spell the owner out instead.
    let line = format!("{} 0 IN {rtype} {}\n", owner.to_ascii(), rdata.join(" "));
    let origin = origin.cloned().unwrap_or_else(Name::root);
    let (_, sets) = Parser::new(line, None, Some(origin))
        .parse()
        .map_err(|e| e.to_string())?;
    let mut records = sets.into_values().flat_map(|set| {
        set.records_without_rrsigs()
            .map(|r| r.data.clone())
            .collect::<Vec<_>>()
    });
    match (records.next(), records.next()) {
        (Some(rdata), None) => Ok(rdata),
        _ => Err("expected exactly one record".into()),
    }
}

struct Token {
    text: String,
}

struct Entry {
    line: usize,
    blank_owner: bool,
    tokens: Vec<Token>,
}

/// Splits the text into entries: tokens of one logical line (parentheses join physical lines),
/// comments dropped, quoted strings kept whole with their quotes.
fn split(text: &str) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries = Vec::new();
    let mut line = 1;
    let mut depth = 0usize;
    let mut paren_line = 0;
    let mut current: Option<Entry> = None;
    let mut token = String::new();
    let mut in_token = false;
    let mut at_line_start = true;
    let mut chars = text.chars().peekable();

    fn finish_token(
        current: &mut Option<Entry>,
        token: &mut String,
        in_token: &mut bool,
        line: usize,
        blank: bool,
    ) {
        if *in_token {
            let entry = current.get_or_insert_with(|| Entry {
                line,
                blank_owner: blank,
                tokens: Vec::new(),
            });
            entry.tokens.push(Token {
                text: std::mem::take(token),
            });
            *in_token = false;
        }
    }

    let mut blank = false;
    while let Some(c) = chars.next() {
        if at_line_start && depth == 0 {
            blank = c == ' ' || c == '\t';
        }
        at_line_start = false;
        match c {
            '\n' => {
                finish_token(&mut current, &mut token, &mut in_token, line, blank);
                line += 1;
                at_line_start = true;
                if depth == 0
                    && let Some(e) = current.take()
                {
                    entries.push(e);
                }
            }
            ';' => {
                finish_token(&mut current, &mut token, &mut in_token, line, blank);
                while chars.peek().is_some_and(|&c| c != '\n') {
                    chars.next();
                }
            }
            ' ' | '\t' | '\r' => finish_token(&mut current, &mut token, &mut in_token, line, blank),
            '(' => {
                finish_token(&mut current, &mut token, &mut in_token, line, blank);
                if depth == 0 {
                    paren_line = line;
                    // An entry that opens with '(' still starts here.
                    current.get_or_insert_with(|| Entry {
                        line,
                        blank_owner: blank,
                        tokens: Vec::new(),
                    });
                }
                depth += 1;
            }
            ')' => {
                finish_token(&mut current, &mut token, &mut in_token, line, blank);
                if depth == 0 {
                    return Err((line, "')' without a matching '('".into()));
                }
                depth -= 1;
            }
            '"' => {
                let start = line;
                token.push('"');
                in_token = true;
                loop {
                    match chars.next() {
                        None => return Err((start, "unterminated quoted string".into())),
                        Some('\\') => {
                            token.push('\\');
                            match chars.next() {
                                Some(n) => {
                                    if n == '\n' {
                                        line += 1;
                                    }
                                    token.push(n);
                                }
                                None => return Err((start, "unterminated quoted string".into())),
                            }
                        }
                        Some('"') => {
                            token.push('"');
                            break;
                        }
                        Some(n) => {
                            if n == '\n' {
                                line += 1;
                            }
                            token.push(n);
                        }
                    }
                }
            }
            '\\' => {
                token.push('\\');
                in_token = true;
                if let Some(n) = chars.next() {
                    token.push(n);
                }
            }
            c => {
                token.push(c);
                in_token = true;
            }
        }
    }
    finish_token(&mut current, &mut token, &mut in_token, line, blank);
    if depth > 0 {
        return Err((paren_line, "'(' is never closed".into()));
    }
    if let Some(e) = current.take() {
        entries.push(e);
    }
    // A lone "( )" leaves an entry without tokens.
    entries.retain(|e| !e.tokens.is_empty());
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_error(text: &str) -> ZoneFileError {
        parse(text, "z").expect_err("must fail")
    }

    #[test]
    fn reads_records_with_inherited_owner_ttl_and_multiline_data() {
        let text = "$ORIGIN example.test.\n$TTL 300\n@ 3600 IN SOA ns1 host ( 1 2\n 3 4 5 ) ; c\n  NS ns1\nwww IN 60 A 192.0.2.1\n  AAAA 2001:db8::1\ntxt TXT \"a ; b\" \"c\"\n";
        let r = parse(text, "z").unwrap();
        assert_eq!(r.len(), 5);
        assert_eq!(r[1].name.to_ascii(), "example.test.");
        assert_eq!((r[1].line, r[1].ttl), (5, 300));
        assert_eq!((r[2].line, r[2].ttl), (6, 60));
        assert_eq!(r[3].name.to_ascii(), "www.example.test.");
        assert_eq!(r[3].ttl, 300, "$TTL wins over the last explicit TTL");
        match &r[4].rdata {
            RData::TXT(t) => assert_eq!(
                &t.txt_data[..],
                [Box::from(&b"a ; b"[..]), Box::from(&b"c"[..])]
            ),
            other => panic!("{other:?}"),
        }
        match &r[0].rdata {
            RData::SOA(s) => assert_eq!(s.mname.to_ascii(), "ns1.example.test."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_the_line_and_the_problem() {
        let e = one_error("$ORIGIN a.test.\n$TTL 1\nx A 192.0.2.1\ny A 300.1.1.1\n");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("bad A data"), "{e}");
        assert_eq!(
            e.to_string().split(':').take(2).collect::<Vec<_>>(),
            ["z", "4"]
        );

        let e = one_error("$ORIGIN a.test.\n$TTL 1\nx BOGUS 1\n");
        assert!(e.message.contains("unsupported record type"), "{e}");
        let e = one_error("$ORIGIN a.test.\nx 1 CH A 192.0.2.1\n");
        assert!(e.message.contains("only IN"), "{e}");
        let e = one_error("x 1 A 192.0.2.1\n");
        assert!(e.message.contains("no $ORIGIN"), "{e}");
        let e = one_error("$ORIGIN a.test.\nx A 192.0.2.1\n");
        assert!(e.message.contains("no TTL"), "{e}");
        let e = one_error("$ORIGIN a.test.\n$TTL 1\nx TXT \"open\n\n");
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unterminated"), "{e}");
        let e = one_error("$ORIGIN a.test.\n$TTL 1\n\nx SOA a b ( 1 2 3\n");
        assert_eq!((e.line, e.message.as_str()), (4, "'(' is never closed"));
        let e = one_error("$INCLUDE other\n");
        assert!(e.message.contains("unsupported directive"), "{e}");
        let e = one_error("$ORIGIN a.test.\n$TTL 1\nx MX mail\n");
        assert!(e.message.contains("bad MX data"), "{e}");
        let e = one_error("$ORIGIN a.test.\n$TTL 1\nx A\n");
        assert!(e.message.contains("without data"), "{e}");
    }
}
