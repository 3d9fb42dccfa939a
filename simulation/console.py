"""Terminal display of a simulation: a live progress bar and a closing summary table."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedft.simulation.report import Report, plot_report
from fedft.simulation.spec import SimulationSpec

if TYPE_CHECKING:
    from fedft.simulation.engine import InProcessEngine
    from fedft.simulation.flower.engine import FlowerEngine
    from fedft.simulation.grpc_engine import GrpcEngine


def run_with_progress(spec: SimulationSpec, *, quiet: bool = False) -> Report:
    """Build and run the engine with a progress display; write report.png at the end."""
    console = Console(stderr=True, quiet=quiet)
    with console.status(f"loading {spec.model} and {spec.dataset} ..."):
        engine = make_engine(spec)
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, disable=quiet) as bar:
        rounds = bar.add_task("rounds", total=spec.rounds)
        clients = bar.add_task("clients this round", total=spec.clients)

        def progress(event: str, done: int, total: int) -> None:
            if event == "round":
                bar.update(rounds, completed=done)
                bar.reset(clients, description=f"round {min(done + 1, total)} clients")
            elif event == "client":
                bar.update(clients, completed=done, total=total)
            elif event == "rouge":
                bar.update(
                    clients, description="generating answers for Rouge-L", completed=0, total=total
                )

        engine.progress = progress
        report = engine.run()
    plot_report(report, spec.out / "report.png")
    console.print(summary_table(report))
    console.print(f"wrote {spec.out / 'report.json'} and {spec.out / 'report.png'}")
    if "local_dp_releases" in report.final:
        final = report.final
        console.print(
            f"client-side DP: the client with the most releases ({final['local_dp_releases']}) "
            f"spent epsilon = {final['local_dp_epsilon']:.3f} at delta = "
            f"{final['local_dp_delta']:g}; each client's ledger.jsonl is in its folder under "
            f"{spec.out} (fedft audit --run FOLDER)"
        )
    audit = getattr(engine, "audit_result", None)
    if audit is not None:
        from fedft.privacy.report import print_audit

        print_audit(console, audit)
        console.print(f"wrote {spec.out / 'audit.json'} and {spec.out / 'audit.png'}")
    return report


def make_engine(spec: SimulationSpec) -> InProcessEngine | GrpcEngine | FlowerEngine:
    """Build the engine ``spec.engine`` names (the Flower one only when its extra is installed)."""
    # Import only the engine asked for: the gRPC one pulls in the coordinator's whole stack.
    if spec.engine == "flower":
        from fedft.simulation.flower.engine import FlowerEngine

        return FlowerEngine(spec)
    if spec.engine == "grpc":
        from fedft.simulation.grpc_engine import GrpcEngine

        return GrpcEngine(spec)
    from fedft.simulation.engine import InProcessEngine

    return InProcessEngine(spec)


def summary_table(report: Report) -> Table:
    """Return a table of per-round eval loss, bytes and time."""
    table = Table(title=f"{report.strategy} on {report.model}, {report.clients} clients")
    for name in ("round", "eval loss", "participants", "MB up", "MB down", "seconds"):
        table.add_column(name, justify="right")
    table.add_row("0", f"{report.initial.get('eval_loss', float('nan')):.4f}", "-", "-", "-", "-")
    for r in report.rounds:
        table.add_row(
            str(r.round),
            f"{r.eval_loss:.4f}",
            str(r.participants),
            f"{r.bytes_up / 1e6:.2f}",
            f"{r.bytes_down / 1e6:.2f}",
            f"{r.seconds:.1f}",
        )
    rouge = report.final.get("rouge_l")
    papers = report.final.get("rouge_l_papers")
    table.caption = (
        f"final Rouge-L: {rouge:.4f} (papers' rouge 1.0.1: {papers:.4f})"
        if isinstance(rouge, float) and isinstance(papers, float)
        else None
    )
    return table
