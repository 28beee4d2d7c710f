//! `RegisterDepositAddress`: every member starts watching an account's
//! deposit address.

use crate::account::AccountId;
use crate::error::FedTxError;
use crate::events::Event;
use crate::ids::MemberIndex;
use crate::overlay::Overlay;

pub(super) fn apply(
    o: &mut Overlay<'_>,
    member: MemberIndex,
    account: &AccountId,
    events: &mut Vec<Event>,
) -> Result<(), FedTxError> {
    if o.is_registered(account) {
        return Err(FedTxError::AlreadyRegistered);
    }
    o.delta.new_registrations.push(*account);
    events.push(Event::DepositAddressRegistered {
        account: *account,
        member,
    });
    Ok(())
}
