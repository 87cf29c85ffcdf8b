include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        a: teacher.classifier => student.classifier with |s, t| (s - t).square().mean(None);
        b: studnt.classifier => teacher.classifier with |s, t| (s - t).square().mean(None);
        c: student.classifier => conv2d_adapter(student.block.conv) with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
