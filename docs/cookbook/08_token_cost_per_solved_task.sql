-- Q: What does a solved task cost in actor tokens and steps, per mode?
SELECT mode, sum(prompt_tokens + completion_tokens)::BIGINT AS actor_tokens,
       count(*) FILTER (WHERE success) AS n_solved,
       round(sum(prompt_tokens + completion_tokens) / nullif(count(*) FILTER (WHERE success), 0), 1)
           AS tokens_per_solved_task,
       round(avg(n_steps), 2) AS avg_steps_per_trial
FROM lake.trial_outcomes
GROUP BY mode
ORDER BY mode;
