//! What goes wrong with a distillation's teachers or the labels of its pairs, when it is declared,
//! built or run.

/// A distillation's teachers or pair labels that do not fit what is asked of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// A teacher named with the empty string.
    #[error("a teacher's name cannot be empty")]
    EmptyTeacherName,
    /// Two teachers with one name.
    #[error("the teacher name `{name}` is given twice: each teacher needs its own name")]
    DuplicateTeacher {
        /// The name given twice.
        name: String,
    },
    /// A mapping of several teachers given none.
    #[error("a mapping needs at least one teacher")]
    NoTeacher,
    /// A pair added without its teacher's name to a mapping of several teachers.
    #[error(
        "this mapping has several teachers ({}): name the pair's teacher with `add_from(name, student, teacher, \
         payload)`",
        quoted(teachers)
    )]
    TeacherNotNamed {
        /// Every teacher's name, in declaration order.
        teachers: Vec<String>,
    },
    /// A mapping of several teachers glued with `distill`, which takes one.
    #[error("this mapping has several teachers: glue it with `distill_teachers(&student, mapping)`")]
    SeveralTeachersGluedAsOne,
    /// A forward given another number of teacher sides than the distillation has teachers (a
    /// cached batch holds one teacher's side).
    #[error("the distillation has {expected} teacher(s), and {given} were given to run")]
    TeacherCount {
        /// The distillation's teachers.
        expected: usize,
        /// The teacher sides given.
        given: usize,
    },
    /// A label that no pair has.
    #[error("cannot rescale the terms to `{label}`: no pair has that label; the labels are {}", labels.join(", "))]
    UnknownLabel {
        /// The label asked for.
        label: String,
        /// The pairs' labels, in declaration order.
        labels: Vec<String>,
    },
}

/// `` `a`, `b` ``.
fn quoted(names: &[String]) -> String {
    names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}
