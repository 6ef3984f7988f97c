//! A small reader for the hand-written C headers: enough C to list the functions they declare,
//! the `HL_*` constants they define and the fields of their structs, so the tests can compare
//! them with what the library exports.
//!
//! It understands the headers' own style (one declaration per statement, comments anywhere,
//! `extern "C"` guards inside `#ifdef __cplusplus`), not C in general.

use std::path::Path;

/// One function declaration: `return_type name(params);`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub return_type: String,
    pub params: String,
}

/// One `typedef struct name { ... } name;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Struct {
    pub name: String,
    pub fields: Vec<String>,
}

/// What a set of headers declares.
#[derive(Debug, Default, Clone)]
pub struct Declarations {
    pub functions: Vec<Function>,
    /// `HL_*` names from `#define`s and enums, in header order.
    pub constants: Vec<String>,
    pub structs: Vec<Struct>,
    /// Function pointer typedefs (`typedef R (*name)(...)`).
    pub callbacks: Vec<String>,
}

impl Declarations {
    /// Reads every header in `paths`.
    pub fn read(paths: &[impl AsRef<Path>]) -> Declarations {
        let mut all = Declarations::default();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            all.add(&text);
        }
        all
    }

    /// The names of the declared functions.
    pub fn function_names(&self) -> Vec<String> {
        self.functions.iter().map(|f| f.name.clone()).collect()
    }

    fn add(&mut self, text: &str) {
        let text = strip_comments(text);
        let mut code = String::new();
        let mut skipping_cplusplus = false;
        for line in text.lines() {
            let trimmed = line.trim();
            if skipping_cplusplus {
                if trimmed.starts_with("#endif") {
                    skipping_cplusplus = false;
                }
                continue;
            }
            if trimmed == "#ifdef __cplusplus" {
                skipping_cplusplus = true;
                continue;
            }
            if let Some(rest) = trimmed.strip_prefix("#define") {
                let mut words = rest.split_whitespace();
                let name = words.next().unwrap_or_default();
                // String constants (the entry symbol's name) are checked on their own.
                let is_string = words.next().is_some_and(|v| v.starts_with('"'));
                if name.starts_with("HL_") && !name.contains('(') && !is_string {
                    self.constants.push(name.to_owned());
                }
                continue;
            }
            if trimmed.starts_with('#') {
                continue;
            }
            code.push_str(line);
            code.push('\n');
        }
        for statement in statements(&code) {
            self.add_statement(&statement);
        }
    }

    fn add_statement(&mut self, s: &str) {
        let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.is_empty() {
            return;
        }
        if let Some(body) = s.strip_prefix("enum {").or_else(|| s.strip_prefix("enum{")) {
            let body = body.trim_end_matches('}');
            for member in body.split(',') {
                let name = member.split('=').next().unwrap_or_default().trim();
                if !name.is_empty() {
                    self.constants.push(name.to_owned());
                }
            }
        } else if let Some(rest) = s.strip_prefix("typedef struct ") {
            if let (Some(open), Some(close)) = (rest.find('{'), rest.rfind('}')) {
                let name = rest[close + 1..].trim().to_owned();
                let fields = rest[open + 1..close]
                    .split(';')
                    .filter_map(field_name)
                    .collect();
                self.structs.push(Struct { name, fields });
            }
        } else if let Some(rest) = s.strip_prefix("typedef ") {
            if let Some(start) = rest.find("(*") {
                let name = rest[start + 2..].split(')').next().unwrap_or_default();
                self.callbacks.push(name.trim().to_owned());
            }
        } else if let Some(open) = s.find('(') {
            let head = s[..open].trim_end();
            let name = last_identifier(head).unwrap_or_default();
            let return_type = head[..head.len() - name.len()].trim().to_owned();
            let close = s.rfind(')').unwrap_or(s.len());
            self.functions.push(Function {
                name,
                return_type,
                params: s[open + 1..close].trim().to_owned(),
            });
        }
    }
}

/// The text without `/* */` and `//` comments (newlines kept, so lines stay lines).
pub fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                    }
                    if prev == '*' && c == '/' {
                        break;
                    }
                    prev = c;
                }
                out.push(' ');
            }
            ('/', Some('/')) => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Top-level statements: split at `;` outside braces and parentheses.
fn statements(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0i32;
    for c in code.chars() {
        match c {
            '{' | '(' => depth += 1,
            '}' | ')' => depth -= 1,
            _ => {}
        }
        if c == ';' && depth == 0 {
            out.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    out
}

/// A struct member's name: the last identifier, or `name` in a function pointer `R (*name)(P)`.
fn field_name(s: &str) -> Option<String> {
    match s.find("(*") {
        Some(start) => last_identifier(s[start + 2..].split(')').next()?),
        None => last_identifier(s),
    }
}

/// The last C identifier in `s`, if any.
fn last_identifier(s: &str) -> Option<String> {
    let s = s.trim_end();
    let end = s.len();
    let start = s
        .char_indices()
        .rev()
        .take_while(|(_, c)| c.is_ascii_alphanumeric() || *c == '_')
        .last()
        .map(|(i, _)| i)?;
    let ident = &s[start..end];
    (!ident.is_empty() && !ident.starts_with(|c: char| c.is_ascii_digit()))
        .then(|| ident.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_finds_functions_constants_structs_and_callbacks() {
        let d = {
            let mut d = Declarations::default();
            d.add(
                "/** doc (with a fake(call); */\n#ifndef G\n#define G\n#define HL_A 1\n\
                 #ifdef __cplusplus\nextern \"C\" {\n#endif\n\
                 enum {\n  /** x */ HL_B = 2,\n  HL_C = 3\n};\n\
                 typedef struct hl_s_t {\n uint32_t a; /* c */\n const char *b;\n \
                 hl_status_t (*f)(void *host,\n int x);\n} hl_s_t;\n#define HL_NAME \"x\"\n\
                 typedef void (*hl_cb_fn)(void *user_data);\n\
                 const char *hl_f(void);\nhl_status_t hl_g(hl_s_t *s,\n  uint64_t n);\n\
                 #ifdef __cplusplus\n}\n#endif\n#endif\n",
            );
            d
        };
        assert_eq!(d.constants, ["HL_A", "HL_B", "HL_C"]);
        assert_eq!(d.function_names(), ["hl_f", "hl_g"]);
        assert_eq!(d.functions[0].return_type, "const char *");
        assert_eq!(d.functions[1].params, "hl_s_t *s, uint64_t n");
        assert_eq!(
            d.structs,
            [Struct {
                name: "hl_s_t".into(),
                fields: vec!["a".into(), "b".into(), "f".into()]
            }]
        );
        assert_eq!(d.callbacks, ["hl_cb_fn"]);
    }
}
