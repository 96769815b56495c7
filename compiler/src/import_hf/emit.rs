//! A small builder for `.arch` text: models, fields and sections, rendered loosely and then
//! put in canonical form by `arch_dsl::fmt::format`.

/// One model item with the comment lines written above it.
pub struct Model {
    pub name: String,
    pub header: Vec<String>,
    pub members: Vec<Member>,
}

pub enum Member {
    Field { path: String, value: String },
    Section { name: String, members: Vec<Member> },
}

/// `path = value`.
pub fn field(path: &str, value: impl Into<String>) -> Member {
    Member::Field {
        path: path.to_string(),
        value: value.into(),
    }
}

/// `name { members }`.
pub fn section(name: &str, members: Vec<Member>) -> Member {
    Member::Section {
        name: name.to_string(),
        members,
    }
}

impl Model {
    pub fn new(name: &str) -> Model {
        Model {
            name: name.to_string(),
            header: Vec::new(),
            members: Vec::new(),
        }
    }

    pub fn push(&mut self, m: Member) {
        self.members.push(m);
    }

    pub fn field(&mut self, path: &str, value: impl Into<String>) {
        self.push(field(path, value));
    }
}

/// The models as `.arch` source, one blank line apart (not yet canonical).
pub fn render(models: &[Model]) -> String {
    let mut out = String::new();
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        for line in &m.header {
            out.push_str(&comment(line));
            out.push('\n');
        }
        out.push_str(&format!("model {} {{\n", m.name));
        members(&m.members, 1, &mut out);
        out.push_str("}\n");
    }
    out
}

fn members(ms: &[Member], depth: usize, out: &mut String) {
    let indent = "    ".repeat(depth);
    for m in ms {
        match m {
            Member::Field { path, value } => out.push_str(&format!("{indent}{path} = {value}\n")),
            Member::Section {
                name,
                members: inner,
            } => {
                out.push_str(&format!("{indent}{name} {{\n"));
                members(inner, depth + 1, out);
                out.push_str(&format!("{indent}}}\n"));
            }
        }
    }
}

/// A `//` comment line; control characters (a newline in a file name) become `?`.
fn comment(text: &str) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if clean.is_empty() {
        "//".to_string()
    } else {
        format!("// {clean}")
    }
}

/// Splits `text` into lines of at most `width` characters at spaces (a longer word stays whole).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// An integer literal.
pub fn int(n: u64) -> String {
    n.to_string()
}

/// A float literal that reads back as exactly `x` and lexes as a float (`1e-5`, `500000.0`).
pub fn float(x: f64) -> String {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

pub fn boolean(b: bool) -> String {
    b.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_and_stay_floats() {
        for (x, s) in [
            (1e-5, "1e-5"),
            (1e-12, "1e-12"),
            (500000.0, "500000.0"),
            (0.15, "0.15"),
            (1e-6, "1e-6"),
            (3.0, "3.0"),
            (1e20, "1e20"),
        ] {
            assert_eq!(float(x), s);
            assert_eq!(s.parse::<f64>().unwrap(), x);
        }
    }

    #[test]
    fn wrap_keeps_words_whole() {
        assert_eq!(wrap("aa bb cc", 5), vec!["aa bb", "cc"]);
        assert_eq!(wrap("abcdefgh x", 3), vec!["abcdefgh", "x"]);
        assert!(wrap("  ", 10).is_empty());
    }
}
