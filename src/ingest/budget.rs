//! A memory budget shared by all in-flight ingest requests, so that many
//! concurrent large bodies cannot exhaust memory: a request that cannot
//! reserve what it needs is answered 429 instead.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::telemetry::Telemetry;

/// Reservations are counted in KiB so that the semaphore's u32 permits cover terabytes.
const UNIT: u64 = 1024;

#[derive(Clone)]
pub struct MemoryBudget {
    sem: Arc<Semaphore>,
    total_units: u32,
    telemetry: Arc<Telemetry>,
}

/// Bytes reserved by one request; released on drop.
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    budget: MemoryBudget,
    bytes: u64,
}

fn units(bytes: u64) -> u32 {
    bytes.div_ceil(UNIT).min(u32::MAX as u64) as u32
}

impl MemoryBudget {
    pub fn new(max_bytes: u64, telemetry: Arc<Telemetry>) -> Self {
        let total_units = units(max_bytes).max(1);
        MemoryBudget {
            sem: Arc::new(Semaphore::new(total_units as usize)),
            total_units,
            telemetry,
        }
    }

    /// An empty reservation to grow as a body arrives.
    pub fn reservation(&self) -> Reservation {
        Reservation {
            permit: None,
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// Bytes currently reserved.
    pub fn used_bytes(&self) -> u64 {
        (self.total_units as u64 - self.sem.available_permits() as u64) * UNIT
    }

    fn publish(&self) {
        self.telemetry
            .ingest_inflight_bytes
            .set(self.used_bytes() as i64);
    }
}

impl Reservation {
    /// Grows the reservation to cover `total` bytes; false when the budget is exhausted.
    pub fn grow_to(&mut self, total: u64) -> bool {
        if total <= self.bytes {
            return true;
        }
        let have = units(self.bytes);
        let need = units(total);
        if need > have {
            match self.budget.sem.clone().try_acquire_many_owned(need - have) {
                Ok(p) => match &mut self.permit {
                    Some(existing) => existing.merge(p),
                    None => self.permit = Some(p),
                },
                Err(_) => return false,
            }
        }
        self.bytes = total;
        self.budget.publish();
        true
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.budget.publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_released() {
        let b = MemoryBudget::new(10 * 1024, Arc::new(Telemetry::new()));
        let mut r1 = b.reservation();
        assert!(r1.grow_to(6 * 1024));
        let mut r2 = b.reservation();
        assert!(!r2.grow_to(5 * 1024), "only 4 KiB left");
        assert!(r2.grow_to(4 * 1024));
        assert_eq!(b.used_bytes(), 10 * 1024);
        drop(r1);
        assert_eq!(b.used_bytes(), 4 * 1024);
        assert!(r2.grow_to(9 * 1024));
        drop(r2);
        assert_eq!(b.used_bytes(), 0);
    }
}
