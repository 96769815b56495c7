//! Symbolic dimensions: a size is `coef · Π syms / div`, enough for batch, sequence and
//! their products and chunkings (`seq / mini_batch`), compared structurally.

use std::collections::HashMap;
use std::fmt;

/// One dimension of a shape.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    pub coef: u64,
    pub div: u64,
    /// Symbol names, sorted (a product).
    pub syms: Vec<String>,
}

pub type Shape = Vec<Dim>;

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Dim {
    pub fn c(n: u64) -> Dim {
        Dim {
            coef: n,
            div: 1,
            syms: Vec::new(),
        }
    }

    pub fn sym(name: &str) -> Dim {
        Dim {
            coef: 1,
            div: 1,
            syms: vec![name.to_string()],
        }
    }

    fn normalized(mut self) -> Dim {
        let g = gcd(self.coef, self.div).max(1);
        self.coef /= g;
        self.div /= g;
        if self.coef == 0 {
            self.syms.clear();
            self.div = 1;
        }
        self.syms.sort();
        self
    }

    /// The constant value, when the dimension has no symbols and divides.
    pub fn as_const(&self) -> Option<u64> {
        (self.syms.is_empty() && self.div == 1).then_some(self.coef)
    }

    pub fn mul(&self, other: &Dim) -> Dim {
        let mut syms = self.syms.clone();
        syms.extend(other.syms.iter().cloned());
        Dim {
            coef: self.coef * other.coef,
            div: self.div * other.div,
            syms,
        }
        .normalized()
    }

    pub fn div_by(&self, n: u64) -> Dim {
        Dim {
            coef: self.coef,
            div: self.div * n.max(1),
            syms: self.syms.clone(),
        }
        .normalized()
    }

    /// The concrete size under symbol bindings.
    pub fn eval(&self, bindings: &HashMap<String, usize>) -> Result<usize, String> {
        let mut v = self.coef as u128;
        for s in &self.syms {
            let b = bindings
                .get(s)
                .ok_or_else(|| format!("dimension `{s}` is not bound"))?;
            v *= *b as u128;
        }
        if !v.is_multiple_of(self.div as u128) {
            return Err(format!("dimension {self} is not a whole number"));
        }
        usize::try_from(v / self.div as u128).map_err(|_| format!("dimension {self} is too large"))
    }

    /// Product of a shape's dims.
    pub fn product(shape: &[Dim]) -> Dim {
        shape.iter().fold(Dim::c(1), |acc, d| acc.mul(d))
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        if self.coef != 1 || self.syms.is_empty() {
            parts.push(self.coef.to_string());
        }
        parts.extend(self.syms.iter().cloned());
        write!(f, "{}", parts.join("*"))?;
        if self.div != 1 {
            write!(f, "/{}", self.div)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Parses the printed form (`4*batch*seq/16`).
pub fn parse_dim(text: &str) -> Result<Dim, String> {
    let (body, div) = match text.split_once('/') {
        Some((b, d)) => (
            b,
            d.trim()
                .parse::<u64>()
                .map_err(|_| format!("bad divisor in `{text}`"))?,
        ),
        None => (text, 1),
    };
    let mut dim = Dim {
        coef: 1,
        div,
        syms: Vec::new(),
    };
    for part in body.split('*').map(str::trim) {
        if let Ok(n) = part.parse::<u64>() {
            dim.coef *= n;
        } else if !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            dim.syms.push(part.to_string());
        } else {
            return Err(format!("bad dimension `{text}`"));
        }
    }
    Ok(dim.normalized())
}

pub fn shape_to_string(shape: &[Dim]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    format!("[{}]", dims.join(", "))
}
