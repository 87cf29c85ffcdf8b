//! Compiles the C++ shim over c10d the way torch-sys compiles its own C++: libtorch's include
//! folders, C++17, and the C++ ABI libtorch was built with (`LIBTORCH_CXX11_ABI`, default 1 as in
//! torch-sys: the pip wheels use the C++11 ABI). torch-sys reports libtorch's lib folder through
//! its `links = "tch"` metadata and already links `torch_cpu` and `c10`.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    for var in ["DEP_TCH_LIBTORCH_LIB", "LIBTORCH_INCLUDE", "LIBTORCH_CXX11_ABI", "CUDA_HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=csrc");
    if env::var_os("CARGO_FEATURE_DOC_ONLY").is_some() {
        return;
    }
    let Some(lib) = env::var_os("DEP_TCH_LIBTORCH_LIB").map(PathBuf::from) else {
        panic!("torch-sys did not report libtorch's lib folder (DEP_TCH_LIBTORCH_LIB); is libtorch set up?");
    };
    // A libtorch folder (and the pip wheel's `torch/`) has `lib/` and `include/` side by side.
    let root = env::var_os("LIBTORCH_INCLUDE").map(PathBuf::from).unwrap_or_else(|| parent(&lib));
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/shim.cpp")
        // Declarations of the Gloo names c10d's header mentions (the wheel ships no Gloo headers).
        .include("csrc")
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .define("GLOG_USE_GLOG_EXPORT", None)
        // libtorch's own headers trip these; the shim's code is kept clean of them.
        .flag_if_supported("-Wno-c++20-extensions")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-missing-field-initializers")
        // c10's CUDA headers align to the cache-line size; the shim does not depend on its value.
        .flag_if_supported("-Wno-interference-size");
    if env::var_os("CARGO_FEATURE_CUDA").is_some() {
        add_cuda(&mut build, &lib, &root);
    }
    build.compile("distill_ddp_shim");
    // Test, example and bench binaries of this package find libtorch without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("/"))
}

/// NCCL needs CUDA's runtime headers and NCCL's header; the pip torch wheel carries both beside
/// `torch/` (`nvidia/cu13/include`, `nvidia/nccl/include`, and the other `nvidia/*/include`). A CUDA
/// toolkit at `CUDA_HOME`, when set, comes first. The wheel lacks the CUDA compiler's `crt/` headers
/// and CCCL's `nv/target`, which a host-only compile needs only for declaration qualifiers: the
/// stand-ins in `csrc/cuda` come last, so a toolkit's own take precedence. The shim's NCCL code
/// lives in libtorch_cuda and c10_cuda (libtorch_cuda loads NCCL and the CUDA runtime itself).
fn add_cuda(build: &mut cc::Build, lib: &Path, root: &Path) {
    for name in ["torch_cuda", "c10_cuda"] {
        if !lib.join(format!("lib{name}.so")).exists() {
            panic!("the `cuda` feature needs a libtorch built with CUDA, but {} has no lib{name}.so", lib.display());
        }
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        build.include(PathBuf::from(home).join("include"));
    }
    let nvidia = parent(root).join("nvidia");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&nvidia)
        .map(|entries| entries.flatten().map(|e| e.path().join("include")).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    dirs.sort();
    let has = |header: &str| {
        env::var_os("CUDA_HOME").is_some_and(|home| PathBuf::from(home).join("include").join(header).exists())
            || dirs.iter().any(|d| d.join(header).exists())
    };
    for header in ["cuda_runtime_api.h", "nccl.h"] {
        if !has(header) {
            panic!(
                "the `cuda` feature needs `{header}`: neither {} (the pip torch's CUDA headers) nor CUDA_HOME has it",
                nvidia.display()
            );
        }
    }
    build.includes(dirs).include("csrc/cuda");
    build.define("USE_C10D_NCCL", None).define("USE_CUDA", None).define("DISTILL_DDP_NCCL", None);
    println!("cargo:rustc-link-lib=dylib=torch_cuda");
    println!("cargo:rustc-link-lib=dylib=c10_cuda");
}
