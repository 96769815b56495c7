//! Symbolic sizes: a [`SizeExpr`] (a sum of `coef · Π syms / div` terms, as the manifest
//! writes it) + the values of the symbols → an element count, with checked arithmetic.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::RuntimeError;

/// One term `coef · Π syms / div`; the division is exact at every valid binding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Term {
    pub coef: u64,
    pub div: u64,
    pub syms: Vec<String>,
}

/// A size: the sum of its terms (an empty list is 0). Serialized as the JSON list of terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SizeExpr(pub Vec<Term>);

impl SizeExpr {
    /// The constant `n`.
    pub fn constant(n: u64) -> SizeExpr {
        SizeExpr(vec![Term {
            coef: n,
            div: 1,
            syms: vec![],
        }])
    }

    /// The single symbol `name` (what an input axis binds).
    pub fn sym(name: &str) -> SizeExpr {
        SizeExpr(vec![Term {
            coef: 1,
            div: 1,
            syms: vec![name.to_string()],
        }])
    }

    /// `coef · Π syms / div` as one term.
    pub fn term(coef: u64, syms: &[&str], div: u64) -> SizeExpr {
        SizeExpr(vec![Term {
            coef,
            div,
            syms: syms.iter().map(|s| s.to_string()).collect(),
        }])
    }

    /// The symbol this size binds when it is exactly one symbol (`seq`), else `None`.
    pub fn as_sym(&self) -> Option<&str> {
        match self.0.as_slice() {
            [Term {
                coef: 1,
                div: 1,
                syms,
            }] if syms.len() == 1 => Some(&syms[0]),
            _ => None,
        }
    }

    /// The value when no symbol occurs, else `None`.
    pub fn as_constant(&self) -> Option<u64> {
        if self.0.iter().any(|t| !t.syms.is_empty()) {
            return None;
        }
        self.eval(&[], &[]).ok()
    }

    /// The symbols this size mentions, each once, in order of appearance.
    pub fn symbols(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in self.0.iter().flat_map(|t| &t.syms) {
            if !out.contains(&s.as_str()) {
                out.push(s);
            }
        }
        out
    }

    /// The value with `syms[i] = dims[i]`. Unknown or negative symbols, overflow, a zero
    /// divisor and an inexact division are errors.
    pub fn eval(&self, syms: &[String], dims: &[i64]) -> Result<u64, RuntimeError> {
        let mut total: u64 = 0;
        for t in &self.0 {
            let mut v = t.coef;
            for s in &t.syms {
                let i = syms.iter().position(|x| x == s).ok_or_else(|| {
                    RuntimeError::Size(format!("unknown symbol `{s}` in `{self}`"))
                })?;
                let d = dims
                    .get(i)
                    .copied()
                    .ok_or_else(|| RuntimeError::Size(format!("symbol `{s}` has no value")))?;
                let d = u64::try_from(d)
                    .map_err(|_| RuntimeError::Size(format!("symbol `{s}` is negative ({d})")))?;
                v = v
                    .checked_mul(d)
                    .ok_or_else(|| RuntimeError::Size(format!("`{self}` overflows")))?;
            }
            if t.div == 0 {
                return Err(RuntimeError::Size(format!("`{self}` divides by zero")));
            }
            if v % t.div != 0 {
                return Err(RuntimeError::Size(format!(
                    "`{self}` does not divide exactly ({v} / {})",
                    t.div
                )));
            }
            total = total
                .checked_add(v / t.div)
                .ok_or_else(|| RuntimeError::Size(format!("`{self}` overflows")))?;
        }
        Ok(total)
    }
}

impl fmt::Display for SizeExpr {
    /// `768*batch*seq`, `seq/16`, `2*seq + 3`; `0` for the empty sum.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(f, "0");
        }
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, " + ")?;
            }
            let mut parts: Vec<String> = Vec::new();
            if t.coef != 1 || t.syms.is_empty() {
                parts.push(t.coef.to_string());
            }
            parts.extend(t.syms.iter().cloned());
            write!(f, "{}", parts.join("*"))?;
            if t.div != 1 {
                write!(f, "/{}", t.div)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms() -> Vec<String> {
        vec!["batch".into(), "seq".into()]
    }

    #[test]
    fn evaluates_sums_of_monomials() {
        let e = SizeExpr(vec![
            Term {
                coef: 768,
                div: 1,
                syms: vec!["batch".into(), "seq".into()],
            },
            Term {
                coef: 3,
                div: 2,
                syms: vec!["seq".into()],
            },
        ]);
        assert_eq!(e.eval(&syms(), &[2, 4]).unwrap(), 768 * 8 + 6);
        assert_eq!(e.to_string(), "768*batch*seq + 3*seq/2");
        assert_eq!(SizeExpr::default().eval(&syms(), &[1, 1]).unwrap(), 0);
        assert_eq!(SizeExpr::constant(7).as_constant(), Some(7));
        assert_eq!(SizeExpr::sym("seq").as_sym(), Some("seq"));
        assert_eq!(SizeExpr::term(2, &["seq"], 1).as_sym(), None);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let big = SizeExpr::term(u64::MAX, &["batch"], 1);
        assert!(matches!(
            big.eval(&syms(), &[2, 1]),
            Err(RuntimeError::Size(_))
        ));
        let zero = SizeExpr::term(1, &["seq"], 0);
        assert!(zero.eval(&syms(), &[1, 1]).is_err());
        let unknown = SizeExpr::sym("tgt");
        let err = unknown.eval(&syms(), &[1, 1]).unwrap_err();
        assert!(err.to_string().contains("tgt"), "{err}");
        let inexact = SizeExpr::term(1, &["seq"], 16);
        assert!(inexact.eval(&syms(), &[1, 17]).is_err());
        assert!(SizeExpr::sym("seq").eval(&syms(), &[1, -3]).is_err());
        let sum = SizeExpr(vec![
            Term {
                coef: u64::MAX,
                div: 1,
                syms: vec![],
            },
            Term {
                coef: 1,
                div: 1,
                syms: vec![],
            },
        ]);
        assert!(sum.eval(&[], &[]).is_err());
    }
}
