//! What a TorchScript module returns, and how its return value maps to named tensors.

use std::fmt;

use tch::{IValue, Tensor};

/// The shape of a TorchScript module's return value: what its endpoints are named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputLayout {
    /// One tensor: the module's own output, and no named endpoint.
    Tensor,
    /// A tuple of tensors, named `0`, `1`, … in order.
    Tuple(usize),
    /// A dict of tensors with these keys (what `create_feature_extractor` returns), in return order.
    Dict(Vec<String>),
}

impl OutputLayout {
    /// The endpoint names: tuple positions as `0`, `1`, …, dict keys, none for a single tensor.
    pub(crate) fn names(&self) -> Vec<String> {
        match self {
            OutputLayout::Tensor => Vec::new(),
            OutputLayout::Tuple(len) => (0..*len).map(|i| i.to_string()).collect(),
            OutputLayout::Dict(keys) => keys.clone(),
        }
    }

    /// Splits a return value of this layout into its tensors, in the order of [`names`](Self::names)
    /// (the single tensor for [`OutputLayout::Tensor`]). A value of another layout is an error
    /// message saying what came back instead.
    pub(crate) fn split(&self, value: IValue) -> Result<Vec<Tensor>, String> {
        match (self, value) {
            (OutputLayout::Tensor, IValue::Tensor(tensor)) => Ok(vec![tensor]),
            (OutputLayout::Tuple(len), IValue::Tuple(items)) if items.len() == *len => {
                items.into_iter().enumerate().map(|(i, item)| tensor_of(item, &i.to_string())).collect()
            }
            (OutputLayout::Dict(keys), IValue::GenericDict(entries)) => {
                let mut returned = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    let IValue::String(key) = key else {
                        return Err(format!("it returned a dict with a key that is {}, not a string", describe(&key)));
                    };
                    returned.push((key, value));
                }
                let returned_keys: Vec<String> = returned.iter().map(|(key, _)| key.clone()).collect();
                let mismatch = || format!("it returned a dict with keys {returned_keys:?}, expected {keys:?}");
                if returned.len() != keys.len() {
                    return Err(mismatch());
                }
                let mut tensors = Vec::with_capacity(keys.len());
                for key in keys {
                    let index = returned.iter().position(|(name, _)| name == key).ok_or_else(mismatch)?;
                    let (_, value) = returned.swap_remove(index);
                    tensors.push(tensor_of(value, key)?);
                }
                Ok(tensors)
            }
            (layout, value) => Err(format!("it returned {}, expected {layout}", describe(&value))),
        }
    }
}

impl fmt::Display for OutputLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputLayout::Tensor => f.write_str("a tensor"),
            OutputLayout::Tuple(len) => write!(f, "a tuple of {len} tensors"),
            OutputLayout::Dict(keys) => write!(f, "a dict of tensors with keys {keys:?}"),
        }
    }
}

fn tensor_of(value: IValue, name: &str) -> Result<Tensor, String> {
    match value {
        IValue::Tensor(tensor) => Ok(tensor),
        other => Err(format!("output `{name}` is {}, not a tensor", describe(&other))),
    }
}

fn describe(value: &IValue) -> String {
    match value {
        IValue::Tensor(_) => "a tensor".to_owned(),
        IValue::Tuple(items) => format!("a tuple of {} values", items.len()),
        IValue::GenericDict(entries) => format!("a dict of {} entries", entries.len()),
        IValue::GenericList(items) => format!("a list of {} values", items.len()),
        IValue::TensorList(items) => format!("a list of {} tensors", items.len()),
        IValue::None => "None".to_owned(),
        IValue::String(_) | IValue::StringList(_) => "a string".to_owned(),
        _ => "a value that is not a tensor".to_owned(),
    }
}
