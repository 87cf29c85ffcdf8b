//! Distillations declared in a TOML file: the pairs, their adapters, criteria and weights, and the
//! teacher's mode, read into a [`Distillation`] ([`Config::distill`]) — the runtime `distill!` and
//! the dynamic [`Mapping`] build too.
//!
//! ```toml
//! [teacher]                    # optional: how the teacher runs (both default to false)
//! grad = false
//! train = false
//!
//! [[pair]]
//! name = "f1"                  # names the loss term and the adapter's variables
//! student = "features.1.conv"  # dotted module paths; "" is the model's own output
//! teacher = "features.1.conv"
//! teacher_adapter = "conv2d_adapter"
//! criterion = "Mse"
//!
//! [[pair]]
//! name = "kd"
//! student = ""
//! teacher = ""
//! criterion = { kind = "KlDiv", temperature = 4.0 }
//! weight = 0.5
//! ```
//!
//! A pair's keys: `name`, `student`, `teacher` (required); `criterion` (required: a name of
//! `distill::criterion` — `"Mse"`, `"L1"`, `"Cosine"`…, the divergences of `SequenceKd` by their
//! own names, `"ForwardKl"`, `"Jsd"`… — or a table with the name under `kind` and the
//! criterion's parameters, the others taking its defaults); `weight` (a number, or a schedule of the
//! training step as a table with its kind — `constant` (`value`), `warmup` (`from`, `to`, `steps`),
//! `linear`/`cosine` (`from`, `to`, `start`, `end`), `steps` (`initial`, `changes = [[step, value], …]`)
//! — read at the distillation's step, [`Distillation::set_step`]); `student_adapter` and
//! `teacher_adapter` (a constructor of `distill::adapter` by name, or a table with the name under
//! `kind` and its options: `atol`/`rtol` for the selection adapters, `in`/`out` for
//! `conv1x1_adapter` and `linear_adapter`); `student_input`, `teacher_input` (capture the module's
//! input rather than its output) and `student_all_calls`, `teacher_all_calls` (capture every call of
//! a module that runs several times). The adapters are built as `distill!` builds them: the
//! constructor receives the teacher's and the student's endpoint modules, and its variables live
//! under `path / name` (`path / name / "student"` and `… / "teacher"` when both sides have one), so
//! that a checkpoint of a `distill!` distillation loads into the same distillation read from a file.
//!
//! Everything is checked when the file is read (syntax, keys, kinds, parameter domains) or when the
//! mapping is built (paths, indices, adapters against the models), and every error is a
//! [`ConfigError`] naming the file, line, column and key, with the closest existing path or
//! key when one is close.
//!
//! ```
//! # extern crate distill_runtime as distill;
//! use distill::config::{Config, ConfigError};
//! use distill::DistillError;
//!
//! let text = "[[pair]]\nname = \"kd\"\nstudent = \"\"\nteacher = \"\"\ncriterion = { kind = \"KlDiv\", temprature = 4.0 }\n";
//! let err = Config::parse(text, "kd.toml").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "kd.toml:5:31: `pair[0].criterion.temprature`: unknown key (did you mean `temperature`?)"
//! );
//! assert!(matches!(err, DistillError::Config(ConfigError { line: 5, .. })));
//! ```

mod adapters;
mod criteria;
mod pair;
mod reader;
mod side;
#[cfg(test)]
mod tests;
mod weight;

pub use crate::error::ConfigError;
pub use side::ConfigSide;

use std::path::Path as FilePath;

use tch::nn::Path;
use toml::de::{DeTable, DeValue};

use self::adapters::AdapterConfig;
use self::criteria::CriterionConfig;
use self::pair::ConfiguredPair;
use self::reader::{At, Source, Table};
use self::side::endpoint_modules;
use self::weight::WeightConfig;
use crate::adapter::Adapter;
use crate::distillation::Distillation;
use crate::endpoint::Endpoint;
use crate::engine::TeacherMode;
use crate::error::{DistillError, PathError, Result};
use crate::mapping::Mapping;
use crate::point::Side;

/// A distillation read from a TOML file: the pairs and the teacher's mode, checked for everything
/// that does not need the models. [`distill`](Self::distill) checks it against the models, builds
/// the adapters and gives the [`Distillation`].
#[derive(Debug)]
pub struct Config {
    file: String,
    text: String,
    teacher: TeacherMode,
    pairs: Vec<PairEntry>,
}

/// A `[[pair]]` table, read.
#[derive(Debug)]
struct PairEntry {
    name: String,
    name_at: At,
    student: EndpointEntry,
    teacher: EndpointEntry,
    criterion: CriterionConfig,
    criterion_at: At,
    weight: WeightConfig,
    student_adapter: Option<(AdapterConfig, At)>,
    teacher_adapter: Option<(AdapterConfig, At)>,
}

/// One endpoint of a pair: its path and options.
#[derive(Debug)]
struct EndpointEntry {
    path: String,
    at: At,
    input: bool,
    all_calls: bool,
}

const TOP_KEYS: &[&str] = &["teacher", "pair"];
const TEACHER_KEYS: &[&str] = &["grad", "train"];
const PAIR_KEYS: &[&str] = &[
    "name",
    "student",
    "teacher",
    "criterion",
    "weight",
    "student_adapter",
    "teacher_adapter",
    "student_input",
    "teacher_input",
    "student_all_calls",
    "teacher_all_calls",
];

impl Config {
    /// Reads and checks the TOML file at `file`.
    ///
    /// # Errors
    /// [`ConfigError`] for a file that cannot be read (its `cause` the [`DistillError::Io`] with
    /// the operating system's error), is not UTF-8 or not TOML, or does not describe a distillation
    /// (located at the key or value at fault).
    pub fn from_file(file: impl AsRef<FilePath>) -> Result<Config> {
        let file = file.as_ref();
        let name = file.display().to_string();
        let error = |line, column, message, cause| ConfigError {
            file: name.clone(),
            line,
            column,
            key: String::new(),
            message,
            cause,
        };
        let bytes = std::fs::read(file).map_err(|err| {
            let message = format!("cannot read the file: {err}");
            // The operating system's error stays the source, so that a caller can tell a missing
            // file from a denied one by its kind.
            error(1, 1, message, Some(Box::new(crate::atomic::io_error("read", file, err))))
        })?;
        let text = String::from_utf8(bytes).map_err(|err| {
            // Located at the first byte that is not UTF-8: the text before it is valid.
            let valid = err.utf8_error().valid_up_to();
            let before = std::str::from_utf8(&err.as_bytes()[..valid]).unwrap_or_default();
            let (line, column) = reader::line_column(before, valid);
            error(
                line,
                column,
                format!(
                    "the byte 0x{:02x} is not UTF-8: a TOML file is UTF-8 text",
                    err.as_bytes().get(valid).copied().unwrap_or_default()
                ),
                None,
            )
        })?;
        Config::parse(&text, name)
    }

    /// Reads and checks the TOML `text`; errors name `file`.
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    pub fn parse(text: &str, file: impl Into<String>) -> Result<Config> {
        let file = file.into();
        let source = Source { file: &file, text };
        let document = DeTable::parse(text).map_err(|err| {
            let at = At { key: String::new(), span: err.span().unwrap_or(0..0) };
            source.error(&at, reader::syntax_message(text, &err))
        })?;
        let root = Table::new(source, String::new(), document.get_ref(), TOP_KEYS)?;
        let teacher = read_teacher(&root)?;
        let pairs = read_pairs(&root)?;
        Ok(Config { file: file.clone(), text: text.to_owned(), teacher, pairs })
    }

    /// The file the configuration was read from (or the name given to [`parse`](Self::parse)).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// How the teacher runs (`[teacher]`: `grad`, `train`).
    pub fn teacher_mode(&self) -> TeacherMode {
        self.teacher
    }

    /// The pairs' names, in file order.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.pairs.iter().map(|pair| pair.name.as_str())
    }

    /// Checks every pair against `student` and `teacher` and builds its adapters under `path`,
    /// giving the [`Mapping`] whose payloads are the configured pairs. Endpoints, and the layers
    /// the adapters take, are checked before any adapter is built, so a wrong path or a layer of
    /// another type leaves `path` without variables.
    fn mapping<'m, S: ConfigSide, T: ConfigSide>(
        &self,
        path: &Path<'_>,
        student: &'m S,
        teacher: &'m T,
    ) -> Result<Mapping<'m, ConfiguredPair>> {
        let source = Source { file: &self.file, text: &self.text };
        let (student_resolver, teacher_resolver) = (student.resolver(Side::Student), teacher.resolver(Side::Teacher));
        for pair in &self.pairs {
            student_resolver.resolve(&pair.student.endpoint()).map_err(|err| source.caused(&pair.student.at, err))?;
            let teacher_endpoint = teacher_resolver
                .resolve(&pair.teacher.endpoint())
                .map_err(|err| source.caused(&pair.teacher.at, err))?;
            // A teacher cache stores a distribution in one encoding: a criterion that reads another
            // is an error here, before any step.
            let reads = pair.criterion.boxed(None).teacher_encoding();
            teacher
                .check_encoding(&pair.name, &teacher_endpoint, reads)
                .map_err(|err| source.caused(&pair.criterion_at, err))?;
            // Adapters are variables of the store, which cannot be taken out again: a later pair's
            // adapter on a layer of the wrong type must fail before an earlier pair's is built.
            let endpoint_modules = endpoint_modules(pair, student, teacher);
            for (adapter, at) in pair.student_adapter.iter().chain(&pair.teacher_adapter) {
                adapter.check(&endpoint_modules).map_err(|err| source.caused(at, err))?;
            }
        }
        let mut mapping = Mapping::new(student, teacher);
        for pair in &self.pairs {
            let modules = endpoint_modules(pair, student, teacher);
            let both = pair.student_adapter.is_some() && pair.teacher_adapter.is_some();
            let build = |adapter: &Option<(AdapterConfig, At)>, side: &str| -> Result<Option<Box<dyn Adapter>>> {
                let Some((config, at)) = adapter else { return Ok(None) };
                let pair_path = path / pair.name.as_str();
                let adapter_path = if both { &pair_path / side } else { pair_path };
                config.build(&adapter_path, &modules).map(Some).map_err(|err| source.caused(at, err))
            };
            let payload = ConfiguredPair {
                name: pair.name.clone(),
                criterion: pair.criterion.boxed(pair.weight.schedule()),
                weight: pair.weight.clone(),
                student_adapter: build(&pair.student_adapter, "student")?,
                teacher_adapter: build(&pair.teacher_adapter, "teacher")?,
            };
            mapping.add(pair.student.endpoint(), pair.teacher.endpoint(), payload).map_err(|err| {
                let entry = if matches!(&err, DistillError::Path(PathError::UnknownPath { side: Side::Teacher, .. })) {
                    &pair.teacher
                } else {
                    &pair.student
                };
                source.caused(&entry.at, err)
            })?;
        }
        Ok(mapping)
    }

    /// The [`Distillation`] of the file's pairs, checked against `student` and `teacher`: the
    /// endpoints resolved and the adapters' layers checked to be of the types their constructors
    /// take (all of them before any adapter is built, so that a wrong path or layer leaves `path`
    /// without variables), the adapters built under `path / name`, each pair labelled by its
    /// `name` with its criterion, weight or schedule and adapters, and every teacher running as
    /// `[teacher]` says.
    /// Its forward's [`losses`](crate::DistillationOutput::f_losses) are the configured pairs'
    /// weighted losses, by name; a pair whose weight follows a schedule reads it at the
    /// distillation's [`step`](Distillation::set_step).
    ///
    /// # Errors
    /// [`ConfigError`] at the path, option or adapter at fault; its `cause` is the model's error
    /// (e.g. [`PathError::UnknownPath`] with the closest existing path);
    /// with a teacher cache, a [`ConfigError`] whose cause is [`DistillError::CacheMismatch`] for a
    /// criterion that reads another encoding than the cache stores. (With a teacher that runs, a
    /// criterion that reads an encoded teacher, such as `TopKKl`, is
    /// [`DistillError::InvalidCriterion`] from the first forward or dry run.)
    ///
    /// An adapter that fails while it is built (a selection adapter whose student conv is not a
    /// pruned copy of the teacher's) leaves the variables of the adapters built before it under
    /// `path`: build again under another path or in a fresh store, where the names are free.
    pub fn distill<'m, S: ConfigSide, T: ConfigSide>(
        &self,
        path: &Path<'_>,
        student: &'m S,
        teacher: &'m T,
    ) -> Result<Distillation<'m>> {
        let mapping = self.mapping(path, student, teacher)?;
        let mut distillation = mapping.into_distillation(student, ConfiguredPair::into_spec)?;
        distillation.set_mode(self.teacher);
        Ok(distillation)
    }
}

impl EndpointEntry {
    fn endpoint(&self) -> Endpoint<'_> {
        let mut endpoint = Endpoint::path(self.path.as_str());
        if self.input {
            endpoint = endpoint.input();
        }
        if self.all_calls {
            endpoint = endpoint.all_calls();
        }
        endpoint
    }
}

fn read_teacher(root: &Table<'_, '_>) -> Result<TeacherMode> {
    let mut mode = TeacherMode::default();
    let Some((value, at)) = root.get("teacher") else { return Ok(mode) };
    let table = as_table(root, value, &at, "a table `[teacher]` with `grad` and `train`")?;
    let table = Table::new(root.source(), at.key, table, TEACHER_KEYS)?;
    if let Some((grad, _)) = table.bool("grad")? {
        mode.grad = grad;
    }
    if let Some((train, _)) = table.bool("train")? {
        mode.train = train;
    }
    Ok(mode)
}

fn read_pairs(root: &Table<'_, '_>) -> Result<Vec<PairEntry>> {
    let source = root.source();
    let whole = At { key: String::new(), span: 0..0 };
    let Some((value, at)) = root.get("pair") else {
        return Err(
            source.error(&whole, "no pair: add a `[[pair]]` table with `name`, `student`, `teacher` and `criterion`")
        );
    };
    let DeValue::Array(tables) = value else {
        return Err(source.error(&at, format!("expected `[[pair]]` tables, found {}", reader::describe(value))));
    };
    let mut pairs: Vec<PairEntry> = Vec::with_capacity(tables.len());
    // Each name's pair index: one lookup per pair, so a file of many pairs reads in linear time.
    let mut names: std::collections::HashMap<String, usize> = std::collections::HashMap::with_capacity(tables.len());
    for (index, table) in tables.iter().enumerate() {
        let at = At { key: format!("pair[{index}]"), span: table.span() };
        let table = as_table(root, table.get_ref(), &at, "a `[[pair]]` table")?;
        let pair = read_pair(&Table::new(source, at.key.clone(), table, PAIR_KEYS)?, &at)?;
        if let Some(first) = names.insert(pair.name.clone(), index) {
            return Err(source.error(&pair.name_at, format!("the name `{}` is already pair {first}'s", pair.name)));
        }
        pairs.push(pair);
    }
    if pairs.is_empty() {
        return Err(source.error(&at, "no pair: add a `[[pair]]` table"));
    }
    Ok(pairs)
}

fn read_pair(table: &Table<'_, '_>, at: &At) -> Result<PairEntry> {
    let source = table.source();
    let (name, name_at) = table.required_string("name", at)?;
    if name.is_empty() || name.contains('.') {
        return Err(source
            .error(&name_at, "a pair's name must be non-empty and without `.` (it names the adapter's variables)"));
    }
    let endpoint = |side: &str| -> Result<EndpointEntry> {
        let (path, path_at) = table.required_string(side, at)?;
        let flag =
            |option: &str| -> Result<bool> { Ok(table.bool(&format!("{side}_{option}"))?.is_some_and(|(on, _)| on)) };
        Ok(EndpointEntry { path, at: path_at, input: flag("input")?, all_calls: flag("all_calls")? })
    };
    let (student, teacher) = (endpoint("student")?, endpoint("teacher")?);
    let (criterion_value, criterion_at) =
        table.get("criterion").ok_or_else(|| source.error(at, "missing key `criterion`"))?;
    let criterion = criteria::read(source, criterion_value, &criterion_at)?;
    let adapter = |side: Side, key: &str| -> Result<Option<(AdapterConfig, At)>> {
        let Some((value, at)) = table.get(key) else { return Ok(None) };
        Ok(Some((adapters::read(source, value, &at, side)?, at)))
    };
    Ok(PairEntry {
        name,
        name_at,
        student,
        teacher,
        criterion,
        criterion_at,
        weight: weight::read(table)?,
        student_adapter: adapter(Side::Student, "student_adapter")?,
        teacher_adapter: adapter(Side::Teacher, "teacher_adapter")?,
    })
}

fn as_table<'a, 'i>(root: &Table<'_, '_>, value: &'a DeValue<'i>, at: &At, what: &str) -> Result<&'a DeTable<'i>> {
    value
        .as_table()
        .ok_or_else(|| root.source().error(at, format!("expected {what}, found {}", reader::describe(value))))
}
