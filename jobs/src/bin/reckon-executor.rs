//! `reckon-executor`: the Ballista executor with reckon's UDFs and object stores
//! (`reckon_cluster::executor_main`; flags as the stock executor's).

fn main() -> std::process::ExitCode {
    reckon_cluster::executor_main()
}
