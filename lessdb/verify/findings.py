"""What `lessdb verify` reports: findings (severity, what, where, how to fix, what --repair did) and totals."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

ERROR, WARNING, INFO = "error", "warning", "info"


@dataclass
class Finding:
    severity: str          # error: data wrong or unusable; warning: bookkeeping off or leftovers; info: note
    check: str             # candidates | features | jobs | runs | checkpoints | models | selections | files
    what: str
    where: str
    fix: str = ""
    repaired: str | None = None   # what --repair did about it (None: nothing)
    repairable: bool = False      # `--repair` fixes it (the summary offers --repair only for these)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class VerifyReport:
    workspace: str
    repair: bool
    findings: list[Finding] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    damaged: set[str] = field(default_factory=set)          # Lance tables whose newest version cannot be read
    damaged_versions: set[tuple[str, int]] = field(default_factory=set)   # (table, version) that cannot be read

    def add(self, severity: str, check: str, what: str, where: str, fix: str = "", repairable: bool = False) -> Finding:
        finding = Finding(severity, check, what, where, fix, repairable=repairable)
        self.findings.append(finding)
        return finding

    def count(self, what: str, n: int = 1) -> None:
        self.checked[what] = self.checked.get(what, 0) + n

    def _open(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity and not f.repaired]

    @property
    def errors(self) -> list[Finding]:
        """Errors still standing (repaired ones excluded)."""
        return self._open(ERROR)

    @property
    def warnings(self) -> list[Finding]:
        return self._open(WARNING)

    @property
    def repaired(self) -> list[Finding]:
        return [f for f in self.findings if f.repaired]

    @property
    def clean(self) -> bool:
        """Nothing left to fix: no error and no warning standing."""
        return not self.errors and not self.warnings

    @property
    def exit_code(self) -> int:
        return 1 if self.errors else 0

    def as_dict(self) -> dict:
        return {"workspace": self.workspace, "repair": self.repair, "clean": self.clean,
                "errors": len(self.errors), "warnings": len(self.warnings), "repaired": len(self.repaired),
                "exit_code": self.exit_code, "checked": self.checked, "seconds": round(self.seconds, 3),
                "findings": [f.as_dict() for f in self.findings]}

    def lines(self) -> list[str]:
        out = [f"lessdb verify{' --repair' if self.repair else ''}: {self.workspace}"]
        for f in self.findings:
            out.append(f"  {f.severity.upper():<8} {f.check}: {f.what}")
            out.append(f"  {'':<8} where: {f.where}")
            if f.fix and not f.repaired:
                out.append(f"  {'':<8} fix: {f.fix}")
            if f.repaired:
                out.append(f"  {'':<8} repaired: {f.repaired}")
        out.append("checked: " + (", ".join(f"{n:,} {what}" for what, n in self.checked.items()) or "nothing"))
        summary = f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        if self.repaired:
            summary += f"; repaired {len(self.repaired)} finding(s)"
        elif not self.repair and any(f.repairable for f in self.errors + self.warnings):
            n = sum(f.repairable for f in self.errors + self.warnings)
            summary += f"; `lessdb verify --repair` fixes {n} of them"
        out.append(("clean: " if self.clean else "result: ") + summary)
        return out
