from kfp import dsl

from components import BASE_IMAGE


@dsl.component(base_image=BASE_IMAGE, install_kfp_package=False)
def promote_model(name: str, metric: str = "score") -> str:
    """Move the ``candidate`` alias to this run's best version, and ``champion`` only if it beats the holder.

    The last step also closes the pipeline's MLflow parent run: named after its recipes,
    with the experiment's comparison (table and chart) as artifacts.

    Args:
        name: Registered model name.
        metric: What ranks versions: ``score`` (mean of TextVQA and MMBench circular) or any evaluation metric name.

    Returns:
        The version that holds ``champion`` afterwards.
    """
    from bettersynth.steps.pipeline_report import finish_pipeline_run
    from bettersynth.steps.register import pipeline_run_id, promote_best

    pipeline_run = pipeline_run_id()
    champion = promote_best(name, pipeline_run, metric)["champion"]
    finish_pipeline_run(pipeline_run)
    return champion
