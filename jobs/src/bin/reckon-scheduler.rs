//! `reckon-scheduler`: the Ballista scheduler with reckon's UDFs, object stores and routing
//! operator (`reckon_cluster::scheduler_main`; flags as the stock scheduler's).

use std::sync::Arc;

use reckon::stages::reconcile::exec::{LogicalCodec, PhysicalCodec, ReckonQueryPlanner};

fn main() -> std::process::ExitCode {
    reckon::allocator::tune();
    reckon_cluster::scheduler_main(reckon_cluster::Extensions {
        query_planner: Arc::new(ReckonQueryPlanner),
        logical_codec: Arc::new(LogicalCodec::default()),
        physical_codec: Arc::new(PhysicalCodec::default()),
    })
}
