"""Weight analysis of the paper's Fig. 2 / appendix E / Table 2 (NM, DM): norm vs direction change."""

from .io import (
    load_state_dict,
    model_files,
    plot_energy,
    plot_layers,
    result_values,
    save_model_folder,
    summary_json,
    write_analysis,
    write_weights_result,
)
from .weights import (
    analyse_models,
    compare_models,
    direction_residual_energy,
    energy_at_rank_fraction,
    norm_direction,
    norm_direction_change,
    rank_fraction_for_energy,
    summarize,
    swap_models,
    swap_norm_direction,
)

__all__ = [
    "analyse_models",
    "compare_models",
    "direction_residual_energy",
    "energy_at_rank_fraction",
    "load_state_dict",
    "model_files",
    "norm_direction",
    "norm_direction_change",
    "plot_energy",
    "plot_layers",
    "result_values",
    "rank_fraction_for_energy",
    "save_model_folder",
    "summarize",
    "summary_json",
    "swap_models",
    "swap_norm_direction",
    "write_analysis",
    "write_weights_result",
]
