//! What goes wrong when a checkpoint is written or restored, or a `state_dict` file is loaded
//! strictly into a model.

use std::fmt;

use tch::Kind;

use super::text::named_or;

/// A checkpoint that cannot be written or restored exactly, or a `state_dict` file that does not
/// fit the model it is loaded into.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A variable whose owner is unknown, a variable missing from the file or not in the models, a
    /// shape or a kind that differs, a step that is not one.
    #[error("checkpoint `{file}`: {problem}")]
    Invalid {
        /// The checkpoint file (empty when only the variables were classified).
        file: String,
        /// What is wrong.
        problem: CheckpointProblem,
    },
    /// A `state_dict` file whose variables do not match the model's (nothing is copied then).
    #[error("cannot load `{file}` into the model{}:{problems}", under(prefix))]
    StateDict {
        /// The file.
        file: String,
        /// The variable prefix the model was built under (empty for the root).
        prefix: String,
        /// What differs (boxed: four lists would make every `Result` of the crate large).
        problems: Box<StateDictProblems>,
    },
}

/// What keeps a checkpoint from being written or restored exactly.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointProblem {
    /// Adapters built under the store's root, which cannot be told from the student's variables.
    #[error(
        "adapters built under the store's root cannot be told from the student's variables: build them under a \
         sub-path (`vs.root() / \"kd\"`)"
    )]
    AdaptersAtRoot,
    /// A variable of the store that no model layer and no adapter path holds.
    #[error(
        "the variable `{name}` belongs to no layer of the student{} and to no adapter path given: it is held by a \
         module the checkpoint cannot see into (a custom layer, a skipped field) or by another model in the same \
         store; keep other models in stores of their own, and give the teacher and the adapters' paths",
        if *with_teacher { " or the teacher" } else { "" }
    )]
    Unowned {
        /// The variable's name.
        name: String,
        /// Whether a teacher was given to look in.
        with_teacher: bool,
    },
    /// A variable that several owners hold.
    #[error("the variable `{name}` belongs to {}", owners.join(" and "))]
    SharedVariable {
        /// The variable's name.
        name: String,
        /// Its owners, described (`the student's `fc``).
        owners: Vec<String>,
    },
    /// A layer of the student whose variable is not in the store.
    #[error("the student's `{layer}` is not a variable of this store")]
    NotInStore {
        /// The layer's tensor, described.
        layer: String,
    },
    /// A step too large for the checkpoint's 64-bit signed integer.
    #[error("the step {step} does not fit a 64-bit signed integer")]
    StepTooLarge {
        /// The step.
        step: u64,
    },
    /// A file without the step of a training checkpoint.
    #[error("no `{key}`: not a training checkpoint")]
    NoStep {
        /// The step's key.
        key: &'static str,
    },
    /// A negative step.
    #[error("a negative step")]
    NegativeStep,
    /// A step that is not a 0-d `int64` tensor.
    #[error("`{key}` is a {kind:?} tensor of shape {shape:?}")]
    StepTensor {
        /// The step's key.
        key: &'static str,
        /// Its kind.
        kind: Kind,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// A variable of the models missing from the file.
    #[error("the variable `{name}` is not in the file")]
    Missing {
        /// The variable's name.
        name: String,
    },
    /// A variable of another shape in the file than in the model.
    #[error("the variable `{name}` has shape {file:?} in the file and {model:?} in the model")]
    Shape {
        /// The variable's name.
        name: String,
        /// Its shape in the file.
        file: Vec<i64>,
        /// Its shape in the model.
        model: Vec<i64>,
    },
    /// An adapter variable with no elements: a fitted adapter not yet sized by the dry run, whose
    /// checkpoint could never be restored into a fitted one.
    #[error(
        "the adapter variable `{name}` is empty ({shape:?}): a fitted adapter is sized by the distillation's dry \
         run; run it before saving"
    )]
    Unfitted {
        /// The variable's name.
        name: String,
        /// Its shape.
        shape: Vec<i64>,
    },
    /// A variable of another kind (dtype) in the file than in the model.
    #[error("the variable `{name}` is {file:?} in the file and {model:?} in the model")]
    Kind {
        /// The variable's name.
        name: String,
        /// Its kind in the file.
        file: Kind,
        /// Its kind in the model.
        model: Kind,
    },
    /// A name in the file that is neither the student's nor an adapter's.
    #[error("the file holds `{name}`, which is neither the student's nor an adapter's")]
    Unexpected {
        /// The name.
        name: String,
    },
}

/// The differences between a `state_dict` file and a model's variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDictProblems {
    /// Variables of the model missing from the file.
    pub missing: Vec<String>,
    /// Keys of the file the model does not have.
    pub unexpected: Vec<String>,
    /// Variables whose shapes differ, each described with both shapes.
    pub shapes: Vec<String>,
    /// Variables that are floating-point on one side and integer on the other, described.
    pub kinds: Vec<String>,
}

/// How many names of each kind the message lists.
const LISTED: usize = 5;

impl StateDictProblems {
    /// Whether the file and the model agree.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.unexpected.is_empty() && self.shapes.is_empty() && self.kinds.is_empty()
    }
}

impl fmt::Display for StateDictProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (what, names, quoted) in [
            ("variables missing from the file", &self.missing, true),
            ("keys of the file the model does not have", &self.unexpected, true),
            ("shapes that differ", &self.shapes, false),
            ("floating-point and integer kinds that differ", &self.kinds, false),
        ] {
            if names.is_empty() {
                continue;
            }
            if !first {
                f.write_str(";")?;
            }
            first = false;
            let listed: Vec<String> =
                names.iter().take(LISTED).map(|name| if quoted { format!("`{name}`") } else { name.clone() }).collect();
            write!(f, " {} {what} ({}", names.len(), listed.join(", "))?;
            if names.len() > LISTED {
                f.write_str(", …")?;
            }
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// ` under `prefix`` for a model built under a prefix, nothing for the root.
fn under(prefix: &str) -> String {
    named_or(prefix, "", " under `", "`")
}
