//! `reckon-scheduler`: the Ballista scheduler with reckon's UDFs and object stores
//! (`reckon_cluster::scheduler_main`; flags as the stock scheduler's).

fn main() -> std::process::ExitCode {
    reckon_cluster::scheduler_main()
}
