//! Compiles `punktfunk/*.proto` with protox (pure Rust), so building needs no protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "punktfunk/common.proto",
        "punktfunk/control.proto",
        "punktfunk/session.proto",
        "punktfunk/media.proto",
        "punktfunk/transport.proto",
        "punktfunk/seat.proto",
        "punktfunk/input.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
