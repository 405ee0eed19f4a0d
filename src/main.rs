//! cvm-agent: PID 1 of a confidential VM. Everything lives in the library; this refuses to run
//! anywhere but as PID 1, where a mistake would otherwise mount over the host's /proc.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--version" || a == "-V") {
        println!("cvm-agent {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if std::process::id() != 1 {
        eprintln!(
            "cvm-agent: error: early: not PID 1 (cvm-agent is the init of a confidential VM; \
             boot it with `cvmctl`/qemu/boot.sh)"
        );
        std::process::exit(2);
    }
    cvm_agent::agent::main()
}
