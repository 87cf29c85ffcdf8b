include!("common/models.rs");

fn plain<'a, P: std::borrow::Borrow<nn::Path<'a>>>(path: P, source: &nn::Conv2D, target: &nn::Conv2D) -> nn::Conv2D {
    nn::conv2d(path, source.ws.size()[0], target.ws.size()[0], 1, Default::default())
}

distill! {
    struct Kd for Net => Net {
        a: student.features[0].conv => plain(teacher.features[0].conv) with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
