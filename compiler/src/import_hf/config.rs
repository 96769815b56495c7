//! Typed reads of a `config.json` object. A key that is absent or `null` takes Hugging
//! Face's default where the caller gives one; a required key that is missing, or a value of
//! the wrong type, is an error that names the key.

use serde_json::{Map, Value};

use super::ImportError;

pub type Result<T> = std::result::Result<T, ImportError>;

/// The largest integer a `.arch` literal can hold.
const MAX_INT: u64 = i64::MAX as u64;

/// The most layers a `.arch` stack may have (`MAX_LAYERS` of arch_dsl's elab/stack.rs).
const MAX_LAYERS: u64 = 100_000;

pub struct Config<'a> {
    map: &'a Map<String, Value>,
    /// `model_type`, for messages.
    pub model_type: String,
    /// Which file this is, for messages (`config.json`, or the ELECTRA generator's).
    pub what: String,
}

impl<'a> Config<'a> {
    pub fn new(map: &'a Map<String, Value>, model_type: &str, what: &str) -> Config<'a> {
        Config {
            map,
            model_type: model_type.to_string(),
            what: what.to_string(),
        }
    }

    /// The value of `key`; `null` reads as absent, as in Hugging Face's config classes.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn missing(&self, key: &str, what: &str) -> ImportError {
        ImportError::Config(format!(
            "{} has no `{key}` ({what}); a `{}` config needs it",
            self.what, self.model_type
        ))
    }

    pub fn bad(&self, key: &str, expected: &str) -> ImportError {
        let found = self
            .get(key)
            .map(short_json)
            .unwrap_or_else(|| "nothing".to_string());
        ImportError::Config(format!(
            "`{key}` in {} must be {expected}, found {found}",
            self.what
        ))
    }

    /// A required integer ≥ 1.
    pub fn size(&self, key: &str, what: &str) -> Result<u64> {
        let v = self.opt_u64(key)?.ok_or_else(|| self.missing(key, what))?;
        self.positive(key, v)
    }

    /// A required layer count: ≥ 1 and within `.arch`'s limit per stack.
    pub fn layers(&self, key: &str, what: &str) -> Result<u64> {
        let n = self.size(key, what)?;
        self.within_layer_limit(key, n)
    }

    /// A layer count, `default` when absent.
    pub fn layers_or(&self, key: &str, default: u64) -> Result<u64> {
        let n = self.size_or(key, default)?;
        self.within_layer_limit(key, n)
    }

    fn within_layer_limit(&self, key: &str, n: u64) -> Result<u64> {
        if n > MAX_LAYERS {
            return Err(ImportError::Config(format!(
                "`{key}` in {} is {n}; a `.arch` stack holds at most {MAX_LAYERS} layers",
                self.what
            )));
        }
        Ok(n)
    }

    /// An integer ≥ 1, `default` when absent.
    pub fn size_or(&self, key: &str, default: u64) -> Result<u64> {
        let v = self.opt_u64(key)?.unwrap_or(default);
        self.positive(key, v)
    }

    fn positive(&self, key: &str, v: u64) -> Result<u64> {
        if v == 0 {
            return Err(ImportError::Config(format!(
                "`{key}` in {} is 0; it must be at least 1",
                self.what
            )));
        }
        Ok(v)
    }

    /// A non-negative integer, if present. Integral floats (`2.0`) are accepted.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n.as_u64().or_else(|| {
                n.as_f64()
                    .filter(|x| x.fract() == 0.0 && *x >= 0.0 && *x <= MAX_INT as f64)
                    .map(|x| x as u64)
            }),
            _ => None,
        };
        match n {
            Some(n) if n <= MAX_INT => Ok(Some(n)),
            Some(_) => Err(self.bad(key, &format!("an integer of at most {MAX_INT}"))),
            None => Err(self.bad(key, "a non-negative integer")),
        }
    }

    pub fn u64_or(&self, key: &str, default: u64) -> Result<u64> {
        Ok(self.opt_u64(key)?.unwrap_or(default))
    }

    /// A finite number > 0, `default` when absent.
    pub fn pos_f64_or(&self, key: &str, default: f64) -> Result<f64> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.as_f64() {
            Some(x) if x > 0.0 && x.is_finite() => Ok(x),
            _ => Err(self.bad(key, "a positive number")),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(self.bad(key, "`true` or `false`")),
        }
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        Ok(self.opt_str(key)?.unwrap_or(default))
    }

    /// Fails when `key` is set to anything but its harmless value `ok`.
    pub fn refuse_bool(&self, key: &str, ok: bool, why: &str) -> Result<()> {
        if self.bool_or(key, ok)? != ok {
            return Err(ImportError::Config(format!(
                "`{key} = {}` is not supported: {why}",
                !ok
            )));
        }
        Ok(())
    }

    /// The number of classes of a sequence classifier: `num_labels`, else the size of
    /// `id2label`, else 2 (Hugging Face's default).
    pub fn num_labels(&self) -> Result<u64> {
        if self.has("num_labels") {
            return self.size("num_labels", "the number of classes");
        }
        match self.get("id2label") {
            None => Ok(2),
            Some(Value::Object(m)) if !m.is_empty() => Ok(m.len() as u64),
            Some(_) => Err(self.bad("id2label", "a non-empty object")),
        }
    }
}

/// A JSON value for a message, cut short.
pub fn short_json(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}
