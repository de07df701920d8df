//! A small reader of EDN (extensible data notation, Clojure's data syntax), enough for the
//! histories Jepsen writes: nil, booleans, integers (with an optional `N`), other numbers
//! (kept as text), strings, characters, keywords, symbols, lists, vectors, maps, sets, tagged
//! elements (`#jepsen.history.Op{...}`, `#object[...]`: the tag is kept, the element read),
//! discarded elements (`#_`), comments and commas.

use std::fmt;

use crate::jsonl::FormatError;

/// One EDN element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    /// Any other number (a float, a ratio, a big integer), as written.
    Number(String),
    Str(String),
    Char(char),
    /// A keyword's name, without its colon.
    Keyword(String),
    Symbol(String),
    List(Vec<Edn>),
    Vector(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
    Set(Vec<Edn>),
    Tagged(String, Box<Edn>),
}

impl Edn {
    /// The element without its tags.
    pub fn untagged(&self) -> &Edn {
        match self {
            Edn::Tagged(_, inner) => inner.untagged(),
            other => other,
        }
    }

    /// The elements of a list or vector.
    pub fn as_seq(&self) -> Option<&[Edn]> {
        match self.untagged() {
            Edn::List(items) | Edn::Vector(items) => Some(items),
            _ => None,
        }
    }

    /// The integer, if it is one.
    pub fn as_int(&self) -> Option<i64> {
        match self.untagged() {
            Edn::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The keyword's name, if it is one.
    pub fn as_keyword(&self) -> Option<&str> {
        match self.untagged() {
            Edn::Keyword(k) => Some(k),
            _ => None,
        }
    }

    /// The value of keyword `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Edn> {
        match self.untagged() {
            Edn::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_keyword() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

fn write_all(f: &mut fmt::Formatter<'_>, items: &[Edn]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

/// Written back as EDN (for error messages).
impl fmt::Display for Edn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Edn::Nil => f.write_str("nil"),
            Edn::Bool(b) => write!(f, "{b}"),
            Edn::Int(i) => write!(f, "{i}"),
            Edn::Number(n) | Edn::Symbol(n) => f.write_str(n),
            Edn::Str(s) => write!(f, "{s:?}"),
            Edn::Char(c) => write!(f, "\\{c}"),
            Edn::Keyword(k) => write!(f, ":{k}"),
            Edn::List(items) => {
                f.write_str("(")?;
                write_all(f, items)?;
                f.write_str(")")
            }
            Edn::Vector(items) => {
                f.write_str("[")?;
                write_all(f, items)?;
                f.write_str("]")
            }
            Edn::Set(items) => {
                f.write_str("#{")?;
                write_all(f, items)?;
                f.write_str("}")
            }
            Edn::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} {v}")?;
                }
                f.write_str("}")
            }
            Edn::Tagged(tag, inner) => write!(f, "#{tag} {inner}"),
        }
    }
}

/// Reads EDN elements one after the other from a text.
pub(crate) struct Parser<'a> {
    text: &'a [u8],
    pos: usize,
    line: usize,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
        )
}

impl<'a> Parser<'a> {
    /// A parser of `text`.
    pub fn new(text: &'a str) -> Self {
        Self {
            text: text.as_bytes(),
            pos: 0,
            line: 1,
        }
    }

    fn error(&self, message: impl Into<String>) -> FormatError {
        FormatError::new(self.line, message)
    }

    /// Skips whitespace, commas and comments.
    fn skip(&mut self) {
        while let Some(&b) = self.text.get(self.pos) {
            if b == b'\n' {
                self.line += 1;
            }
            if b.is_ascii_whitespace() || b == b',' {
                self.pos += 1;
            } else if b == b';' {
                while self.text.get(self.pos).is_some_and(|&b| b != b'\n') {
                    self.pos += 1;
                }
            } else {
                return;
            }
        }
    }

    /// The next top-level element and the line it begins on, or `None` at the end.
    pub fn next_element(&mut self) -> Result<Option<(usize, Edn)>, FormatError> {
        loop {
            self.skip();
            if self.pos >= self.text.len() {
                return Ok(None);
            }
            let line = self.line;
            if let Some(element) = self.element()? {
                return Ok(Some((line, element)));
            }
        }
    }

    /// A token: the bytes up to the next delimiter.
    fn token(&mut self) -> &'a str {
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(|&b| !is_delimiter(b)) {
            self.pos += 1;
        }
        // Delimiters are ASCII, so the token is whole UTF-8.
        std::str::from_utf8(&self.text[start..self.pos]).unwrap_or("")
    }

    /// Elements up to `close`.
    fn until(&mut self, close: u8) -> Result<Vec<Edn>, FormatError> {
        let mut items = Vec::new();
        loop {
            self.skip();
            match self.text.get(self.pos) {
                None => return Err(self.error(format!("the end came before '{}'", close as char))),
                Some(&b) if b == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(b')' | b']' | b'}') => {
                    return Err(self.error(format!(
                        "'{}' where '{}' was expected",
                        self.text[self.pos] as char, close as char
                    )))
                }
                Some(_) => {
                    if let Some(item) = self.element()? {
                        items.push(item);
                    }
                }
            }
        }
    }

    /// One element at the current position (after whitespace); `None` for a discarded one.
    fn element(&mut self) -> Result<Option<Edn>, FormatError> {
        let b = self.text[self.pos];
        let element = match b {
            b'(' => {
                self.pos += 1;
                Edn::List(self.until(b')')?)
            }
            b'[' => {
                self.pos += 1;
                Edn::Vector(self.until(b']')?)
            }
            b'{' => {
                self.pos += 1;
                let items = self.until(b'}')?;
                if items.len() % 2 != 0 {
                    return Err(self.error("a map with an odd number of elements"));
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    entries.push((k, v));
                }
                Edn::Map(entries)
            }
            b')' | b']' | b'}' => return Err(self.error(format!("unexpected '{}'", b as char))),
            b'"' => Edn::Str(self.string()?),
            b'\\' => {
                self.pos += 1;
                let token = self.token();
                let c = match token {
                    "newline" => '\n',
                    "space" => ' ',
                    "tab" => '\t',
                    "return" => '\r',
                    _ if token.starts_with('u') && token.len() == 5 => {
                        u32::from_str_radix(&token[1..], 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| self.error(format!("bad character \\{token}")))?
                    }
                    _ => {
                        let mut chars = token.chars();
                        match (chars.next(), chars.next()) {
                            (Some(c), None) => c,
                            // A delimiter character itself, such as `\(`.
                            (None, _) if self.pos < self.text.len() => {
                                self.pos += 1;
                                self.text[self.pos - 1] as char
                            }
                            _ => return Err(self.error(format!("bad character \\{token}"))),
                        }
                    }
                };
                Edn::Char(c)
            }
            b'#' => {
                self.pos += 1;
                match self.text.get(self.pos) {
                    Some(b'{') => {
                        self.pos += 1;
                        Edn::Set(self.until(b'}')?)
                    }
                    Some(b'_') => {
                        self.pos += 1;
                        self.skip();
                        if self.pos >= self.text.len() {
                            return Err(self.error("#_ at the end"));
                        }
                        self.element()?;
                        return Ok(None);
                    }
                    Some(b'#') => {
                        self.pos += 1;
                        Edn::Number(format!("##{}", self.token()))
                    }
                    _ => {
                        let tag = self.token().to_owned();
                        if tag.is_empty() {
                            return Err(self.error("'#' without a tag"));
                        }
                        self.skip();
                        if self.pos >= self.text.len() {
                            return Err(self.error(format!("#{tag} without an element")));
                        }
                        let Some(inner) = self.element()? else {
                            return Err(self.error(format!("#{tag} of a discarded element")));
                        };
                        Edn::Tagged(tag, Box::new(inner))
                    }
                }
            }
            b':' => {
                self.pos += 1;
                let name = self.token();
                if name.is_empty() {
                    return Err(self.error("':' without a name"));
                }
                Edn::Keyword(name.to_owned())
            }
            _ => {
                let token = self.token();
                if token.is_empty() {
                    return Err(self.error(format!("unexpected '{}'", b as char)));
                }
                let numeric = token.as_bytes()[0].is_ascii_digit()
                    || (token.len() > 1
                        && matches!(token.as_bytes()[0], b'+' | b'-')
                        && token.as_bytes()[1].is_ascii_digit());
                match token {
                    "nil" => Edn::Nil,
                    "true" => Edn::Bool(true),
                    "false" => Edn::Bool(false),
                    _ if numeric => match token.trim_end_matches('N').parse::<i64>() {
                        Ok(i) => Edn::Int(i),
                        Err(_) => Edn::Number(token.to_owned()),
                    },
                    _ => Edn::Symbol(token.to_owned()),
                }
            }
        };
        Ok(Some(element))
    }

    /// A string at the current position (at its opening quote).
    fn string(&mut self) -> Result<String, FormatError> {
        self.pos += 1;
        let mut bytes = Vec::new();
        loop {
            let Some(&b) = self.text.get(self.pos) else {
                return Err(self.error("the end came inside a string"));
            };
            self.pos += 1;
            match b {
                b'"' => break,
                b'\n' => {
                    self.line += 1;
                    bytes.push(b);
                }
                b'\\' => {
                    let Some(&e) = self.text.get(self.pos) else {
                        return Err(self.error("the end came inside a string"));
                    };
                    self.pos += 1;
                    match e {
                        b'n' => bytes.push(b'\n'),
                        b't' => bytes.push(b'\t'),
                        b'r' => bytes.push(b'\r'),
                        b'b' => bytes.push(8),
                        b'f' => bytes.push(12),
                        b'u' => {
                            let hex = self
                                .text
                                .get(self.pos..self.pos + 4)
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .and_then(|h| u32::from_str_radix(h, 16).ok())
                                .and_then(char::from_u32)
                                .ok_or_else(|| self.error("bad \\u escape in a string"))?;
                            self.pos += 4;
                            let mut buffer = [0; 4];
                            bytes.extend_from_slice(hex.encode_utf8(&mut buffer).as_bytes());
                        }
                        other => bytes.push(other),
                    }
                }
                other => bytes.push(other),
            }
        }
        String::from_utf8(bytes).map_err(|_| self.error("a string that is not UTF-8"))
    }
}
