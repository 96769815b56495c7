//! `archc fmt` (ARCH_LANGUAGE.md §4a): canonical text → itself, messy text → canonical text,
//! and on every input: idempotent, every comment kept in order, the same AST modulo spans.

use arch_dsl::ast::{Expr, ExprKind, File, Item, LetItem, Member};
use arch_dsl::fmt::format;
use arch_dsl::parse::parse;
use arch_dsl::{FileId, Severity};
use std::path::{Path, PathBuf};

fn fmt_ok(text: &str) -> String {
    match format(text) {
        Ok(out) => out,
        Err(diags) => panic!("input does not parse: {diags:?}\n{text}"),
    }
}

/// Formats `input`, checks every property that holds for any input, and returns the output.
fn formatted(input: &str) -> String {
    let out = fmt_ok(input);
    assert_eq!(fmt_ok(&out), out, "format is not idempotent on:\n{out}");
    assert_eq!(
        comment_texts(&out),
        comment_texts(input),
        "comments changed:\n{out}"
    );
    assert_eq!(ast_text(&out), ast_text(input), "AST changed:\n{out}");
    assert!(
        out.is_empty() || (out.ends_with('\n') && !out.ends_with("\n\n")),
        "bad ending: {out:?}"
    );
    for line in out.lines() {
        assert_eq!(line, line.trim_end(), "trailing whitespace in {out:?}");
        assert!(!line.contains('\t'), "tab in {out:?}");
    }
    assert!(!out.contains("\n\n\n"), "two blank lines in:\n{out}");
    out
}

/// Comment texts in order, each line without trailing whitespace (the formatter trims it).
fn comment_texts(text: &str) -> Vec<String> {
    let (file, _) = parse(FileId(0), text);
    file.comments
        .iter()
        .map(|c| {
            c.text
                .split('\n')
                .map(str::trim_end)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect()
}

/// The AST printed without spans, fully parenthesised.
fn ast_text(text: &str) -> String {
    let (file, diags) = parse(FileId(0), text);
    assert!(
        diags.iter().all(|d| d.severity != Severity::Error),
        "{diags:?}"
    );
    file_sexp(&file)
}

fn file_sexp(f: &File) -> String {
    let items: Vec<String> = f
        .items
        .iter()
        .map(|i| match i {
            Item::Use(u) => format!("(use {})", u.raw),
            Item::Let(l) => let_sexp(l),
            Item::Block(b) => format!("(block {} {})", b.name.name, members_sexp(&b.members)),
            Item::Model(m) => {
                let base = m.base.as_ref().map_or("-", |b| b.name.as_str());
                format!(
                    "(model {} {base} {})",
                    m.name.name,
                    members_sexp(&m.members)
                )
            }
        })
        .collect();
    items.join("\n")
}

fn let_sexp(l: &LetItem) -> String {
    format!("(let {} {})", l.name.name, expr_sexp(&l.value))
}

fn members_sexp(members: &[Member]) -> String {
    let parts: Vec<String> = members
        .iter()
        .map(|m| match m {
            Member::Let(l) => let_sexp(l),
            Member::Field(f) => format!("(field {} {})", f.dotted(), expr_sexp(&f.value)),
            Member::Section(s) => format!("(section {} {})", s.name.name, members_sexp(&s.members)),
        })
        .collect();
    format!("[{}]", parts.join(" "))
}

fn expr_sexp(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Int(v, raw) => format!("(int {v} {raw})"),
        ExprKind::Float(v, raw) => format!("(float {v} {raw})"),
        ExprKind::Str(v, raw) => format!("(str {v:?} {raw})"),
        ExprKind::Bool(b) => format!("{b}"),
        ExprKind::Name(n) => format!("(name {n})"),
        ExprKind::Call { callee, args } => {
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    format!(
                        "({} {})",
                        a.name.as_ref().map_or("-", |n| n.name.as_str()),
                        expr_sexp(&a.value)
                    )
                })
                .collect();
            format!("(call {} {})", callee.name, args.join(" "))
        }
        ExprKind::List(items) => format!(
            "(list {})",
            items.iter().map(expr_sexp).collect::<Vec<_>>().join(" ")
        ),
        ExprKind::Neg(x) => format!("(neg {})", expr_sexp(x)),
        ExprKind::Binary { op, lhs, rhs } => {
            format!("({} {} {})", op.symbol(), expr_sexp(lhs), expr_sexp(rhs))
        }
        ExprKind::Paren(x) => format!("(paren {})", expr_sexp(x)),
    }
}

/// The `.arch` files of a directory, by name.
fn arch_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "arch"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            (
                p.clone(),
                std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}")),
            )
        })
        .collect()
}

fn examples() -> Vec<(PathBuf, String)> {
    let files = arch_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/examples"));
    assert!(files.len() >= 7, "the §9 examples are missing");
    files
}

/// Where `a` and `b` first differ, for failure messages.
fn first_difference(a: &str, b: &str) -> String {
    let line = a
        .lines()
        .zip(b.lines())
        .position(|(x, y)| x != y)
        .unwrap_or(a.lines().count().min(b.lines().count()));
    format!(
        "line {}: {:?} became {:?}",
        line + 1,
        a.lines().nth(line),
        b.lines().nth(line)
    )
}

#[test]
fn section_9_examples_are_unchanged() {
    for (path, text) in examples() {
        let out = formatted(&text);
        assert!(
            out == text,
            "{path:?} changed, {}",
            first_difference(&text, &out)
        );
    }
}

#[test]
fn specs_are_unchanged() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    let mut changed = Vec::new();
    let files = arch_files(&dir);
    assert!(files.len() >= 17, "{} spec files", files.len());
    for (path, text) in files {
        let out = formatted(&text);
        if out != text {
            changed.push(format!(
                "{}: {}",
                path.display(),
                first_difference(&text, &out)
            ));
        }
    }
    assert!(
        changed.is_empty(),
        "not in canonical form:\n{}",
        changed.join("\n")
    );
}

/// Each example without its comments, flattened onto one line with commas after members,
/// formats back to the example without its comments.
#[test]
fn flattened_examples_format_back() {
    for (path, text) in examples() {
        let canonical: String = text
            .lines()
            .filter(|l| !l.starts_with("//"))
            .map(|l| format!("{l}\n"))
            .collect();
        let canonical = canonical.trim_start().to_string();
        let flat: Vec<String> = canonical
            .lines()
            .map(|l| {
                if l.starts_with(' ') && !l.ends_with('{') {
                    format!("{l},")
                } else {
                    l.to_string()
                }
            })
            .collect();
        let flat = flat
            .join(" ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(formatted(&flat), canonical, "{path:?} flattened: {flat}");
    }
}

const MESSY: &str = r#"// header comment


use   "common.arch"
let   WIDTH=768 // file constant
model base{vocab=50257,d_model=WIDTH,context=1024,norm=layernorm( eps=1e-5 , bias=true ),decoder{layers=12,attention{heads=12,bias=true},mlp{hidden=4*d_model act=gelu_tanh}}}
/* between */ block   mixer {   mamba{d_state=16}
  mlp { hidden = 4*d_model , act = swiglu , }   // trailing on mlp
}
model   child:base{
    let   scale=d_model^-0.5
        d_model = 1_600,   // wider

    // layers comment
    decoder.layers=48
    decoder {
        attention { heads = 25 // 1600 / 64
                    kv_heads = ( 5 ) }
        time_mix{}
    }
    head = lm(scale = /* inline */ scale)
    position = rope(
        theta = 500000.0, // inside a call
        fraction = 0.5,
    )
    stack = [ mixer*3 , [a,b]*2 ]  * -2
    // end of child
}
model empty{ }
// footer
"#;

const MESSY_FORMATTED: &str = r#"// header comment

use "common.arch"

let WIDTH = 768  // file constant

model base {
    vocab = 50257
    d_model = WIDTH
    context = 1024
    norm = layernorm(eps = 1e-5, bias = true)
    decoder {
        layers = 12
        attention { heads = 12  bias = true }
        mlp { hidden = 4 * d_model  act = gelu_tanh }
    }
}

/* between */
block mixer {
    mamba { d_state = 16 }
    mlp { hidden = 4 * d_model  act = swiglu }  // trailing on mlp
}

model child : base {
    let scale = d_model ^ -0.5
    d_model = 1_600  // wider

    // layers comment
    decoder.layers = 48
    decoder {
        attention {
            heads = 25  // 1600 / 64
            kv_heads = (5)
        }
        time_mix { }
    }
    head = lm(scale = scale)  /* inline */
    position = rope(theta = 500000.0, fraction = 0.5)  // inside a call
    stack = [mixer * 3, [a, b] * 2] * -2
    // end of child
}

model empty { }

// footer
"#;

#[test]
fn messy_input_formats_to_canonical_text() {
    assert_eq!(formatted(MESSY), MESSY_FORMATTED);
}

#[test]
fn comments_in_odd_places_are_kept_in_order() {
    let input = r#"model m { // about m
    decoder /* odd place */ {
        layers = 2
    } // after decoder
    x = f(a = 1, // one
          b = 2 /* two */) /* three */
    y = 1 /* multi
      line */ z = 2


    /* end */

}"#;
    let expected = r#"model m {  // about m
    decoder {  /* odd place */
        layers = 2
    }  // after decoder
    x = f(a = 1, b = 2)  // one
    /* two */
    /* three */
    y = 1  /* multi
      line */
    z = 2

    /* end */
}
"#;
    assert_eq!(formatted(input), expected);
}

#[test]
fn one_line_sections_and_empty_items() {
    let input = "block b {}\nmodel m { s { } t { a = 1, let k = 2 } u { v { } } }";
    let expected =
        "block b { }\n\nmodel m {\n    s { }\n    t { a = 1  let k = 2 }\n    u {\n        v { }\n    }\n}\n";
    assert_eq!(formatted(input), expected);
}

#[test]
fn a_comment_inside_a_section_opens_it() {
    let input = "model m {\n    mlp { hidden = 1 /* why */ }\n    time_mix { /* nothing */ }\n    attention { heads = 2 }  // kept on one line\n}\n";
    let expected = "model m {\n    mlp {\n        hidden = 1  /* why */\n    }\n    time_mix {  /* nothing */\n    }\n    attention { heads = 2 }  // kept on one line\n}\n";
    assert_eq!(formatted(input), expected);
}

#[test]
fn expressions_are_reprinted_from_the_tree() {
    let input = "let a=-2^2\nlet b=2^-3^2\nlet c=( 1+2 )*-x/round_up(y,64)\nlet d=- -x\nlet e=[ ]\nlet f=g( )\nlet s=\"a\\\"b\"\nlet t=1e-5+1E3+128_256";
    let expected = "let a = -2 ^ 2\n\nlet b = 2 ^ -3 ^ 2\n\nlet c = (1 + 2) * -x / round_up(y, 64)\n\nlet d = --x\n\nlet e = []\n\nlet f = g()\n\nlet s = \"a\\\"b\"\n\nlet t = 1e-5 + 1E3 + 128_256\n";
    assert_eq!(formatted(input), expected);
}

#[test]
fn blank_lines_are_kept_once_and_never_at_body_edges() {
    let input = "\n\n// top\n\n\n\nmodel m {\n\n    a = 1\n\n\n\n    b = 2\n    c = 3\n\n}\n\n\n\n\nmodel n { }\n\n\n";
    let expected = "// top\n\nmodel m {\n    a = 1\n\n    b = 2\n    c = 3\n}\n\nmodel n { }\n";
    assert_eq!(formatted(input), expected);
}

#[test]
fn windows_line_endings_and_trailing_spaces_go() {
    let input = "// c  \r\nmodel m {\r\n    a = 1 // t\t\r\n    /* x  \r\n y */\r\n}\r\n";
    let expected = "// c\nmodel m {\n    a = 1  // t\n    /* x\n y */\n}\n";
    assert_eq!(formatted(input), expected);
}

#[test]
fn files_without_items() {
    assert_eq!(formatted(""), "");
    assert_eq!(formatted("  \n\n"), "");
    assert_eq!(
        formatted("\n// one\n\n\n/* two */ // three\n"),
        "// one\n\n/* two */\n// three\n"
    );
}

#[test]
fn a_file_that_does_not_parse_is_not_formatted() {
    for bad in [
        "model m {",
        "model m { a = }",
        "model m { a = 1 } junk",
        "/// doc\nmodel m { }",
        "model m { a = 1000x }",
    ] {
        match format(bad) {
            Ok(out) => panic!("{bad:?} formatted as {out:?}"),
            Err(diags) => {
                assert!(!diags.is_empty(), "{bad:?}: no diagnostics");
                assert!(
                    diags.iter().all(|d| d.severity == Severity::Error),
                    "{bad:?}: {diags:?}"
                );
            }
        }
    }
}

/// A small deterministic generator (no dependency needed for a fixed seed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Adds random whitespace and comments where the text has whitespace outside comments.
fn perturb(text: &str, rng: &mut Lcg) -> String {
    const GAPS: [&str; 8] = [
        " ",
        "\n",
        "\n\n\n  ",
        " /* c */ ",
        " // c\n",
        "\n// c\n\n",
        "/* a\n  b */",
        "\t",
    ];
    let (file, _) = parse(FileId(0), text);
    let in_comment = |i: usize| file.comments.iter().any(|c| c.span.range().contains(&i));
    let mut out = String::new();
    for (i, ch) in text.char_indices() {
        if ch.is_whitespace() && !in_comment(i) && rng.below(3) == 0 {
            if ch == '\n' {
                out.push('\n'); // it may end a `//` comment
            }
            out.push_str(GAPS[rng.below(GAPS.len() as u64) as usize]);
        } else {
            out.push(ch);
        }
    }
    out
}

#[test]
fn properties_hold_with_comments_and_whitespace_anywhere() {
    let mut rng = Lcg(7);
    for (path, text) in examples() {
        for _ in 0..20 {
            let input = perturb(&text, &mut rng);
            let out = std::panic::catch_unwind(|| formatted(&input));
            assert!(out.is_ok(), "{path:?}: properties fail on input:\n{input}");
        }
    }
}
