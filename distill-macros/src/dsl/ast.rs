//! The syntax tree of a `distill!` invocation.
//!
//! ```text
//! distill! {
//!     #[attr]* /// docs
//!     VIS struct NAME for STUDENT_TYPE => TEACHERS {
//!         PAIR*
//!     }
//! }
//! TEACHERS := TEACHER_TYPE                         one teacher, named `teacher` in the pairs
//!           | '(' NAME ':' TEACHER_TYPE (',' NAME ':' TEACHER_TYPE)* ','? ')'
//!                                                  several, each named in the pairs (`big.features[1]`)
//! PAIR     := (/// docs)* [LABEL ':'] ENDPOINT '=>' ENDPOINT 'with' EXPR (',' OPTION)* ';'
//! ENDPOINT := TARGET
//!           | PATH '(' TARGET ')' ('.' IDENT '(' EXPR,* ')')*
//!                                  an adapter constructor wrapping the side it applies to, with the
//!                                  options of the builder it returns (`.tolerance(…)`)
//! TARGET   := SIDE SEGMENT*            student.features[0].conv, teacher.head.0, student (the root)
//!           | SIDE '[' STRING ']'      teacher["layer3"]: a named output, the string path of that side
//!           | "dotted.path"            checked at compile time as far as the types tell
//! SEGMENT  := '.' IDENT | '.' INTEGER | '[' EXPR ']'
//! OPTION   := 'input' | 'all_calls' | 'input' '(' SIDE ')' | 'all_calls' '(' SIDE ')'
//! ```

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::{token, Attribute, Expr, Ident, LitStr, Member, Token, Type, Visibility};

use crate::util::Krate;

/// The whole invocation.
pub struct Input {
    /// The attributes for the generated struct (`#[distill(crate = "…")]` taken out).
    pub attrs: Vec<Attribute>,
    /// How generated code names the `distill` crate.
    pub krate: Krate,
    pub vis: Visibility,
    pub name: Ident,
    pub student_ty: Type,
    /// One teacher (named `teacher`, `several` false) or several named ones, in declaration order.
    pub teachers: Vec<Teacher>,
    /// Whether the teachers were declared by name, `(big: Big, wide: Wide)`.
    pub several: bool,
    /// The pairs that parsed.
    pub pairs: Vec<Pair>,
    /// Whether the body had pairs at all (parsed or not).
    pub has_pairs: bool,
    /// The span of the `{ … }` of pairs.
    pub body_span: Span,
}

/// One teacher: `big: BigNet` (or the one teacher type, named `teacher`).
pub struct Teacher {
    pub name: Ident,
    pub ty: Type,
}

/// One `label: student => teacher with criterion, options;`.
pub struct Pair {
    pub docs: Vec<Attribute>,
    pub label: Option<Ident>,
    pub student: Endpoint,
    pub teacher: Endpoint,
    pub criterion: Expr,
    pub options: Vec<PairOption>,
    /// The span of the pair's first token, for pair-wide errors.
    pub span: Span,
}

impl Pair {
    /// The endpoint of `side`.
    pub fn endpoint(&self, side: Side) -> &Endpoint {
        match side {
            Side::Student => &self.student,
            Side::Teacher => &self.teacher,
        }
    }

    /// Whether `kind` applies to `side` (given for both sides, or for that one).
    pub fn has_option(&self, kind: OptionKind, side: Side) -> bool {
        self.options.iter().any(|o| o.kind == kind && o.side.is_none_or(|(s, _)| s == side))
    }
}

/// Which model an endpoint belongs to (by its position around `=>`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    Student,
    Teacher,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Student => "student",
            Side::Teacher => "teacher",
        }
    }

    pub fn other(self) -> Side {
        match self {
            Side::Student => Side::Teacher,
            Side::Teacher => Side::Student,
        }
    }
}

/// One side of a pair: the module it names, and the adapter applied to that side's tensor, if any.
pub struct Endpoint {
    pub adapter: Option<Adapter>,
    pub target: Target,
    /// `teacher` in `teacher["layer3"]`: a named output written with its side, which lowers to the
    /// string path `"layer3"` of that side.
    pub named_on: Option<Ident>,
}

/// `conv2d_adapter(…)` around an endpoint, with the options that follow it.
pub struct Adapter {
    /// The constructor, `conv2d_adapter` or `path::to::<T>::make`.
    pub func: syn::ExprPath,
    /// The span of the parentheses.
    pub paren: Span,
    /// `.tolerance(Tolerance::new(1e-4, 1e-3))`: method calls on what the constructor returns, in
    /// order, as written.
    pub options: Vec<AdapterOption>,
}

/// One method call after an adapter's constructor: `.tolerance(…)`.
pub struct AdapterOption {
    /// The `.` before the method, kept for its span.
    pub dot: Token![.],
    /// The builder's method, `tolerance`.
    pub method: Ident,
    /// The parentheses around the arguments, for their span.
    pub paren: token::Paren,
    /// The arguments, as written.
    pub args: Punctuated<Expr, Token![,]>,
}

/// The module an endpoint names.
pub enum Target {
    /// `student.features[0].conv`.
    Typed(TypedPath),
    /// `"features.0.conv"`.
    Str(LitStr),
}

impl Endpoint {
    /// The identifier that starts the endpoint's target: `teacher` in `conv2d_adapter(teacher.x)`,
    /// `big` in `big["layer3"]`; `None` for a bare string path.
    pub fn root(&self) -> Option<&Ident> {
        match (&self.named_on, &self.target) {
            (Some(named_on), _) => Some(named_on),
            (None, Target::Typed(path)) => Some(&path.root),
            (None, Target::Str(_)) => None,
        }
    }

    /// The span of the endpoint's first token.
    pub fn start_span(&self) -> Span {
        match &self.adapter {
            Some(adapter) => adapter.func.path.segments.first().map_or(adapter.paren, |segment| segment.ident.span()),
            None => self.target.span(),
        }
    }

    /// The span of the endpoint's last token.
    pub fn end_span(&self) -> Span {
        match &self.adapter {
            Some(adapter) => adapter.options.last().map_or(adapter.paren, |option| option.paren.span.join()),
            None => match &self.target {
                Target::Typed(path) => path.end_span(),
                Target::Str(lit) => lit.span(),
            },
        }
    }
}

impl Target {
    /// The span of the target's first token.
    pub fn span(&self) -> Span {
        match self {
            Target::Typed(path) => path.root.span(),
            Target::Str(lit) => lit.span(),
        }
    }
}

/// `root` followed by segments; `root` should be `student` or `teacher` (checked later).
pub struct TypedPath {
    pub root: Ident,
    pub segments: Vec<Segment>,
}

impl TypedPath {
    /// The span of the path's last token.
    pub fn end_span(&self) -> Span {
        match self.segments.last() {
            None => self.root.span(),
            Some(Segment::Field(member)) => member_span(member),
            Some(Segment::Index { span, .. }) => *span,
        }
    }
}

pub enum Segment {
    /// `.name` or `.0`.
    Field(Member),
    /// `[expr]`; the span is the brackets'.
    Index { expr: Expr, span: Span },
}

pub fn member_span(member: &Member) -> Span {
    match member {
        Member::Named(ident) => ident.span(),
        Member::Unnamed(index) => index.span,
    }
}

/// A per-pair option.
pub struct PairOption {
    pub kind: OptionKind,
    /// `None`: both sides.
    pub side: Option<(Side, Span)>,
    pub span: Span,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum OptionKind {
    /// Capture the module's input instead of its output.
    Input,
    /// Capture every call (concatenated along the batch dimension).
    AllCalls,
}

impl OptionKind {
    pub fn name(self) -> &'static str {
        match self {
            OptionKind::Input => "input",
            OptionKind::AllCalls => "all_calls",
        }
    }
}
