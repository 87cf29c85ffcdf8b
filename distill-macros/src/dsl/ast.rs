//! The syntax tree of a `distill!` invocation.
//!
//! ```text
//! distill! {
//!     #[attr]* /// docs
//!     VIS struct NAME for STUDENT_TYPE => TEACHER_TYPE {
//!         PAIR*
//!     }
//! }
//! PAIR     := (/// docs)* [LABEL ':'] ENDPOINT '=>' ENDPOINT 'with' EXPR (',' OPTION)* ';'
//! ENDPOINT := SIDE SEGMENT*            student.features[0].conv, teacher.head.0, student (the root)
//!           | "dotted.path"            checked at compile time as far as the types tell
//!           | PATH '(' SIDE SEGMENT* ')'   an adapter constructor wrapping the side it applies to
//! SEGMENT  := '.' IDENT | '.' INTEGER | '[' EXPR ']'
//! OPTION   := 'input' | 'all_calls' | 'input' '(' SIDE ')' | 'all_calls' '(' SIDE ')'
//! ```

use proc_macro2::Span;
use syn::{Attribute, Expr, Ident, LitStr, Type, Visibility};

/// The whole invocation.
pub struct Input {
    pub attrs: Vec<Attribute>,
    pub vis: Visibility,
    pub name: Ident,
    pub student_ty: Type,
    pub teacher_ty: Type,
    /// The pairs that parsed.
    pub pairs: Vec<Pair>,
    /// Whether the body had pairs at all (parsed or not).
    pub has_pairs: bool,
    /// The span of the `{ … }` of pairs.
    pub body_span: Span,
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

/// One side of a pair.
pub enum Endpoint {
    /// `student.features[0].conv`.
    Typed(TypedPath),
    /// `"features.0.conv"`.
    Str(LitStr),
    /// `conv2d_adapter(teacher.features[0].conv)`; `paren` is the span of the parentheses.
    Adapted { func: syn::ExprPath, inner: Box<Endpoint>, paren: Span },
}

impl Endpoint {
    /// The endpoint under any adapter.
    pub fn target(&self) -> &Endpoint {
        match self {
            Endpoint::Adapted { inner, .. } => inner.target(),
            other => other,
        }
    }

    pub fn adapter(&self) -> Option<&syn::ExprPath> {
        match self {
            Endpoint::Adapted { func, .. } => Some(func),
            _ => None,
        }
    }

    /// The span of the endpoint's first token.
    pub fn start_span(&self) -> Span {
        match self {
            Endpoint::Typed(path) => path.root.span(),
            Endpoint::Str(lit) => lit.span(),
            Endpoint::Adapted { func, paren, .. } => {
                func.path.segments.first().map_or(*paren, |segment| segment.ident.span())
            }
        }
    }

    /// The span of the endpoint's last token.
    pub fn end_span(&self) -> Span {
        match self {
            Endpoint::Typed(path) => path.end_span(),
            Endpoint::Str(lit) => lit.span(),
            Endpoint::Adapted { paren, .. } => *paren,
        }
    }
}

impl TypedPath {
    /// The span of the path's last token.
    pub fn end_span(&self) -> Span {
        match self.segments.last() {
            None => self.root.span(),
            Some(Segment::Field(syn::Member::Named(ident))) => ident.span(),
            Some(Segment::Field(syn::Member::Unnamed(index))) => index.span,
            Some(Segment::Index { span, .. }) => *span,
        }
    }
}

/// `root` followed by segments; `root` should be `student` or `teacher` (checked later).
pub struct TypedPath {
    pub root: Ident,
    pub segments: Vec<Segment>,
}

pub enum Segment {
    /// `.name` or `.0`.
    Field(syn::Member),
    /// `[expr]`; the span is the brackets'.
    Index { expr: Expr, span: Span },
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
