//! A user's first crate: a small model, a `distill!` declaration, a dynamic `Mapping`, the same
//! pairs as a `Distillation` built from a `Mapping` of criteria, one training step, and the teacher
//! side written to a teacher cache and read back. Exits non-zero (with the error) when anything is
//! off.
use distill::cache::{CacheWriter, TeacherCache, TeacherHash};
use distill::prelude::*;
use tch::nn::{Module, ModuleT, OptimizerConfig, VarStore};
use tch::{Device, Kind, Tensor};

#[derive(Debug, Distillable)]
struct Net {
    body: nn::Seq<nn::Linear>,
    head: nn::Linear,
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.body.forward_t(xs, train).relu())
    }
}

fn net(p: nn::Path, width: i64) -> Net {
    let body = (0..2).map(|i| nn::linear(&p / "body" / i, if i == 0 { 8 } else { width }, width, Default::default()));
    Net { body: body.collect(), head: nn::linear(&p / "head", width, 3, Default::default()) }
}

distill! {
    /// Feature and logit distillation between two small MLPs.
    struct Kd for Net => Net {
        hidden: student.body[1] => teacher.body[1] with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
}

distill! {
    /// The same pairs with the teacher side read from a teacher cache.
    struct CachedKd for Net => TeacherCache {
        hidden: student.body[1] => teacher["body.1"] with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
}

fn main() -> Result<(), DistillError> {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (net(vs.root() / "student", 16), net(vs.root() / "teacher", 16));
    let xs = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
    let ys = Tensor::from_slice(&[0i64, 1, 2, 0]);

    let kd = Kd::new(vs.root() / "kd", &student, &teacher)?;
    let mut opt = tch::nn::Sgd::default().build(&vs, 0.1)?;
    let out = kd.forward_t(&xs, true)?;
    let loss = out.student_output.cross_entropy_for_logits(&ys) + out.loss();
    println!("distill!: {}", out.losses());
    opt.backward_step(&loss);

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("body.1", "body.1", ())?;
    mapping.add("", "", ())?;
    let model = distill(&student, &teacher, mapping);
    let output = model.forward_t(&xs, false)?;
    for (s, t, ()) in output.pairs() {
        if s.size() != t.size() {
            return Err(DistillError::InvalidArgument(format!("pair shapes {:?} vs {:?}", s.size(), t.size())));
        }
    }
    println!("Mapping: {} pairs, student output {:?}", output.len(), output.student_output.size());

    // The same pairs with criteria as payloads: the runtime `distill!` runs, with the same losses.
    let mut criteria: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    criteria.add(student.body.slot(1), teacher.body.slot(1), Box::new(Mse))?;
    criteria.add("", "", Box::new(KlDiv::new(4.0)))?;
    let dynamic = Distillation::from_mapping(&student, criteria)?;
    let (typed, untyped) = (kd.forward_t(&xs, false)?.f_loss()?, dynamic.forward_t(&xs, false)?.f_loss()?);
    if typed.double_value(&[]) != untyped.double_value(&[]) {
        return Err(DistillError::InvalidArgument(format!("distill! loss {typed} vs Distillation loss {untyped}")));
    }
    println!("Distillation::from_mapping: {}", dynamic.forward_t(&xs, false)?.f_losses()?);

    // The teacher's side stored once (f32) and read back: the same loss, bit for bit.
    let dir = std::env::temp_dir().join(format!("distill-user-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    CacheWriter::new(&dir, TeacherHash::of_var_store(&vs)?).write(kd.distillation(), &teacher, &xs)?;
    let cache = TeacherCache::open(&dir)?;
    let cached = CachedKd::new(vs.root() / "cached", &student, &cache)?;
    let batch = cache.batch(&Tensor::from_slice(&[0i64, 1, 2, 3]), 0)?;
    let (live, stored) = (kd.forward_t(&xs, false)?.f_loss()?, cached.forward_cached(&xs, &batch, false)?.f_loss()?);
    let _ = std::fs::remove_dir_all(&dir);
    if live.double_value(&[]) != stored.double_value(&[]) {
        return Err(DistillError::InvalidArgument(format!("live loss {live} vs cached loss {stored}")));
    }
    println!("TeacherCache: the cached loss equals the live one ({})", stored.double_value(&[]));
    Ok(())
}
