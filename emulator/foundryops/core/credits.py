"""Credits: a price per operation, balances per key or organization, shadow and enforced mode.

Owns `CreditMode`, `Prices`, `Account` and `Ledger.charge`. In shadow mode (the default) usage
is metered against a simulated balance that may go negative and nothing is refused (the API
sends X-Credits-Remaining-Simulated). In enforced mode the balance is debited and an operation
it cannot pay for raises INSUFFICIENT_CREDITS (402) and debits nothing. An account belongs to
an organization when the key has one and the seed gives the organization a balance, else to
the key. Imports nothing from trio, quart or yaml.
"""

from __future__ import annotations

import enum

import attrs

from .errors import InsufficientCredits


class CreditMode(enum.Enum):
    SHADOW = "shadow"
    ENFORCED = "enforced"


OPERATIONS = ("match_record", "match_batch_record", "match_file_row", "dataset_append_row")


@attrs.frozen
class Prices:
    """Credits per unit of each operation (the source gives none; these are the emulator's)."""

    match_record: float = 1.0
    match_batch_record: float = 1.0
    match_file_row: float = 0.1
    dataset_append_row: float = 0.0

    def of(self, operation: str) -> float:
        if operation not in OPERATIONS:
            raise ValueError(f"unknown operation {operation!r}")
        price: float = getattr(self, operation)
        return price


@attrs.define
class Account:
    account_id: str  # "org:<name>" or "key:<id>"
    mode: CreditMode
    balance: float


@attrs.frozen
class Charge:
    account_id: str
    mode: CreditMode
    cost: float
    remaining: float


@attrs.define
class Ledger:
    prices: Prices
    default_mode: CreditMode
    default_balance: float
    accounts: dict[str, Account] = attrs.field(factory=dict)

    def account_for(self, key_id: str, org: str | None) -> Account:
        if org is not None and f"org:{org}" in self.accounts:
            return self.accounts[f"org:{org}"]
        account_id = f"key:{key_id}"
        account = self.accounts.get(account_id)
        if account is None:
            account = Account(account_id, self.default_mode, self.default_balance)
            self.accounts[account_id] = account
        return account

    def quote(self, operation: str, units: int) -> float:
        return round(self.prices.of(operation) * units, 6)

    def require(self, key_id: str, org: str | None, operation: str, units: int) -> None:
        """Raise INSUFFICIENT_CREDITS if an enforced balance cannot pay; debit nothing."""
        account = self.account_for(key_id, org)
        cost = self.quote(operation, units)
        if account.mode is CreditMode.ENFORCED and cost > account.balance + 1e-9:
            raise InsufficientCredits(
                "INSUFFICIENT_CREDITS",
                f"This operation costs {cost:g} credits; the balance is {account.balance:g}.",
                {"required": cost, "balance": account.balance, "operation": operation},
            )

    def charge(self, key_id: str, org: str | None, operation: str, units: int) -> Charge:
        """Debit (enforced) or meter (shadow) `units` of `operation`; 402 when unaffordable."""
        self.require(key_id, org, operation, units)
        account = self.account_for(key_id, org)
        cost = self.quote(operation, units)
        account.balance = round(account.balance - cost, 6)
        return Charge(account.account_id, account.mode, cost, account.balance)

    def refund(self, charge: Charge) -> None:
        account = self.accounts.get(charge.account_id)
        if account is not None:
            account.balance = round(account.balance + charge.cost, 6)

    def balance(self, key_id: str, org: str | None) -> Account:
        return self.account_for(key_id, org)
