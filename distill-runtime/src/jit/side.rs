//! A TorchScript module as a side of a distillation: it resolves endpoints to its named outputs and
//! runs by its own forward, which gives them all.

use tch::Tensor;

use super::Module;
use crate::captured::Captured;
use crate::endpoint::ResolvedEndpoint;
use crate::error::Result;
use crate::point::Side;
use crate::side::{LiveTeacher, SideModel, SideResolver};

impl SideModel for Module {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::own(self, move |endpoint| self.resolve_endpoint(endpoint, side))
    }

    fn run(&self, xs: &Tensor, train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        self.run_endpoints(xs, train, endpoints)
    }
}

/// A TorchScript teacher runs: its forward gives the teacher's side. Not suggested by the error of
/// a forward over a teacher cache, whose fix is `forward_cached`, not another teacher type.
#[diagnostic::do_not_recommend]
impl LiveTeacher for Module {}
