//! The leases bound to one session, as its lease state keeps them: a slab of weak references
//! whose slot numbers the bound leases remember, so that joining and leaving cost no hashing
//! and one word per bound lease (pure; generic over what it points to, so it imports
//! nothing of the lease layer).

use std::sync::Weak;

/// Weak references to the leases bound to a session, each in a numbered slot that the lease
/// keeps to leave again. Free slots are reused before the slab grows; once the last lease
/// left, the slab gives its memory back.
#[derive(Debug)]
pub(super) struct BoundSet<T> {
    slots: Vec<Option<Weak<T>>>,
    /// The numbers of the empty slots of `slots`.
    free: Vec<u32>,
}

impl<T> Default for BoundSet<T> {
    fn default() -> Self {
        BoundSet {
            slots: Vec::new(),
            free: Vec::new(),
        }
    }
}

impl<T> BoundSet<T> {
    /// Puts `lease` in a free slot and returns the slot's number; `None` when every number
    /// a `u32` holds is taken (over four billion bound leases, more than any memory holds).
    pub(super) fn insert(&mut self, lease: Weak<T>) -> Option<u32> {
        if let Some(n) = self.free.pop() {
            if let Some(slot) = self.slots.get_mut(n as usize) {
                *slot = Some(lease);
                return Some(n);
            }
        }
        let n = u32::try_from(self.slots.len()).ok()?;
        self.slots.push(Some(lease));
        Some(n)
    }

    /// Empties slot `n` if it holds the lease at `lease` (a slot taken over by another
    /// lease since is left alone); whether it did.
    pub(super) fn remove(&mut self, n: u32, lease: *const T) -> bool {
        let Some(slot) = self.slots.get_mut(n as usize) else {
            return false;
        };
        if !slot
            .as_ref()
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), lease))
        {
            return false;
        }
        *slot = None;
        self.free.push(n);
        if self.free.len() == self.slots.len() {
            *self = BoundSet::default();
        }
        true
    }

    /// How many leases are in the set.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Every lease in the set.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Weak<T>> {
        self.slots.iter().flatten()
    }

    /// Every lease in the set, emptying it.
    pub(super) fn drain(self) -> impl Iterator<Item = Weak<T>> {
        self.slots.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn slots_are_reused_and_an_emptied_set_gives_its_memory_back() {
        let (a, b, c) = (Arc::new(1), Arc::new(2), Arc::new(3));
        let mut set = BoundSet::default();
        let na = set.insert(Arc::downgrade(&a)).unwrap();
        let nb = set.insert(Arc::downgrade(&b)).unwrap();
        assert_eq!((na, nb, set.len()), (0, 1, 2));
        assert!(set.remove(na, Arc::as_ptr(&a)));
        // Gone already, or a slot another lease holds: nothing happens.
        assert!(!set.remove(na, Arc::as_ptr(&a)));
        assert!(!set.remove(nb, Arc::as_ptr(&a)));
        assert!(!set.remove(7, Arc::as_ptr(&a)));
        assert_eq!(set.insert(Arc::downgrade(&c)), Some(na));
        assert_eq!(set.len(), 2);
        assert!(set.remove(nb, Arc::as_ptr(&b)));
        assert!(set.remove(na, Arc::as_ptr(&c)));
        assert_eq!(set.len(), 0);
        assert_eq!((set.slots.capacity(), set.free.capacity()), (0, 0));
    }

    #[test]
    fn ten_thousand_leases_in_and_out_leave_nothing_behind() {
        let leases: Vec<Arc<usize>> = (0..10_000).map(Arc::new).collect();
        let mut set = BoundSet::default();
        let slots: Vec<u32> = leases
            .iter()
            .map(|l| set.insert(Arc::downgrade(l)).unwrap())
            .collect();
        assert_eq!(set.len(), 10_000);
        for (l, n) in leases.iter().zip(&slots).rev() {
            assert!(set.remove(*n, Arc::as_ptr(l)));
        }
        assert_eq!(set.len(), 0);
        assert_eq!(set.slots.capacity(), 0);
    }

    #[test]
    fn drain_gives_every_lease_still_in_the_set() {
        let (a, b) = (Arc::new(1), Arc::new(2));
        let mut set = BoundSet::default();
        let na = set.insert(Arc::downgrade(&a)).unwrap();
        set.insert(Arc::downgrade(&b)).unwrap();
        set.remove(na, Arc::as_ptr(&a));
        let left: Vec<i32> = set
            .drain()
            .filter_map(|w| w.upgrade())
            .map(|l| *l)
            .collect();
        assert_eq!(left, vec![2]);
    }
}
